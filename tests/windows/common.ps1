# Shared by the stagedrv test-VM scripts (dot-sourced: . "$PSScriptRoot\common.ps1").
# Windows PowerShell 5.1 or PowerShell 7, 64-bit, in an elevated session.
#
# Running the scripts: Windows client editions ship with the execution policy
# Restricted ("running scripts is disabled on this system"), and RemoteSigned refuses
# files that came from a download or a zip (Mark-of-the-Web: "is not digitally
# signed"). In the elevated PowerShell, in the folder with the files, either
#   Set-ExecutionPolicy -Scope Process Bypass -Force     (this window only), then .\install.ps1 ...
# or, one script at a time,
#   powershell -ExecutionPolicy Bypass -File .\install.ps1
# (-File passes every argument as a string: -Parameters @{...} and lists such as
# -TestArgs a, b need the first form). To keep RemoteSigned instead, unblock the
# copied files first: Get-ChildItem -File | Unblock-File.
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# 32-bit PowerShell sees SysWOW64 as System32 (file system redirection): the image would
# be copied where the kernel never looks, and sc.exe start would fail with 2.
if (-not [Environment]::Is64BitProcess) {
    throw 'This is 32-bit PowerShell ("Windows PowerShell (x86)"): run the stagedrv scripts in 64-bit PowerShell.'
}

$ServiceName   = 'stagedrv'
$DriverPath    = Join-Path $env:SystemRoot 'System32\drivers\stagedrv.sys'
$ParametersKey = "HKLM:\SYSTEM\CurrentControlSet\Services\$ServiceName\Parameters"

# Win32 errors sc.exe reports that the scripts treat as "already in that state".
$ERROR_SERVICE_ALREADY_RUNNING     = 1056
$ERROR_SERVICE_DOES_NOT_EXIST      = 1060
$ERROR_SERVICE_CANNOT_ACCEPT_CTRL  = 1061   # e.g. already STOP_PENDING
$ERROR_SERVICE_NOT_ACTIVE          = 1062

function Assert-Administrator {
    $principal = [Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()
    if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
        throw 'Run this script in an elevated PowerShell (Run as Administrator).'
    }
}

# Runs sc.exe (never `sc`: in PowerShell that is Set-Content), prints what it said, and
# throws unless the exit code is 0 or one of $Ok. Returns the exit code.
function Invoke-Sc {
    param([Parameter(Mandatory)][string[]]$Arguments, [int[]]$Ok = @())
    $text = (& sc.exe @Arguments | Out-String).TrimEnd()
    $code = $LASTEXITCODE
    Write-Host "> sc.exe $($Arguments -join ' ')    [exit $code]"
    if ($text) { Write-Host $text }
    if ($code -ne 0 -and $Ok -notcontains $code) {
        throw "sc.exe $($Arguments -join ' ') failed with exit code $code"
    }
    return $code
}

# The service state as sc.exe query reports it (RUNNING, STOPPED, STOP_PENDING, ...),
# or $null when the service does not exist.
function Get-StagedrvState {
    $text = & sc.exe query $ServiceName | Out-String
    if ($LASTEXITCODE -eq $ERROR_SERVICE_DOES_NOT_EXIST) { return $null }
    if ($LASTEXITCODE -ne 0) { throw "sc.exe query $ServiceName failed with exit code ${LASTEXITCODE}: $text" }
    if ($text -match '\d\s+(STOPPED|START_PENDING|STOP_PENDING|RUNNING|CONTINUE_PENDING|PAUSE_PENDING|PAUSED)\b') {
        return $Matches[1]
    }
    throw "cannot find the state in the output of sc.exe query ${ServiceName}:`n$text"
}

# Polls until the state is $Want or $Seconds pass; returns the last state seen.
function Wait-StagedrvState {
    param([string]$Want, [int]$Seconds = 15)
    $deadline = (Get-Date).AddSeconds($Seconds)
    while ($true) {
        $state = Get-StagedrvState
        if ($state -eq $Want -or (Get-Date) -gt $deadline) { return $state }
        Start-Sleep -Milliseconds 250
    }
}

# sc.exe stop, then wait for STOPPED. While any handle to a \\.\StageDrvN device is open
# the I/O manager defers DriverUnload until the last handle closes, and sc.exe query
# shows STOP_PENDING all that time: then this throws, naming the likely cause.
function Stop-Stagedrv {
    $state = Get-StagedrvState
    if ($null -eq $state -or $state -eq 'STOPPED') { return }
    if ($state -ne 'STOP_PENDING') {
        Invoke-Sc @('stop', $ServiceName) -Ok $ERROR_SERVICE_NOT_ACTIVE, $ERROR_SERVICE_CANNOT_ACCEPT_CTRL | Out-Null
    }
    $state = Wait-StagedrvState 'STOPPED'
    if ($state -ne 'STOPPED') {
        throw "stagedrv is still ${state}: some process holds a handle to \\.\StageDrvN open. DriverUnload runs " +
              'when the last handle closes; close it (or end that process) and run this again.'
    }
}

# Hints for the Win32 errors sc.exe start reports most often for this driver.
$StartHints = @{
    2    = 'the image is missing: is %SystemRoot%\System32\drivers\stagedrv.sys there?'
    50   = 'DriverEntry returned STATUS_NOT_SUPPORTED: the hardware profile (InterruptVector set) needs HardwareProfileOptIn=1, or the kernel gives it no translated vector (expected on x64 Windows 10/11; the debug output says which), see the README'
    87   = 'DriverEntry returned STATUS_INVALID_PARAMETER: InterruptVector is set but RegisterBaseLow/High is not'
    577  = 'Windows could not verify the signature: test signing off (enable-test-signing.ps1, then reboot), Secure Boot on, or the image is not signed'
    1275 = 'the driver was blocked from loading (Code Integrity / vulnerable-driver blocklist / memory-integrity policy): see Event Viewer > Microsoft-Windows-CodeIntegrity/Operational'
}

# sc.exe start (already running is fine); on failure throws with a hint for the usual causes.
function Start-Stagedrv {
    $code = Invoke-Sc @('start', $ServiceName) -Ok (@($ERROR_SERVICE_ALREADY_RUNNING) + [int[]]@($StartHints.Keys))
    if ($code -ne 0 -and $code -ne $ERROR_SERVICE_ALREADY_RUNNING) {
        throw "sc.exe start $ServiceName failed with ${code}: $($StartHints[$code])"
    }
    $state = Wait-StagedrvState 'RUNNING' 10
    if ($state -ne 'RUNNING') { throw "stagedrv is $state after sc.exe start, not RUNNING" }
}
