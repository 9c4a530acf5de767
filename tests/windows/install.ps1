# Installs and starts stagedrv as a legacy kernel service with sc.exe (no INF needed).
# Elevated, on a VM prepared by enable-test-signing.ps1. Safe to run again: it stops a
# running copy, replaces the image, re-applies the service configuration and starts it.
# Blocked by the execution policy? See "Running the scripts" in common.ps1 (or the README).
#
#   .\install.ps1 [-Sys <signed .sys>] [-Parameters @{ DeviceCount = 4; ReadTimeoutSeconds = 5 }] [-ResetParameters]
#
# -Sys defaults to stagedrv-signed.sys (tests/windows/sign-linux.sh) or stagedrv.sys
# (the `cargo make` package) next to this script; either way it is installed as
# %SystemRoot%\System32\drivers\stagedrv.sys. The steps are the README's:
#
#   copy <signed .sys> %SystemRoot%\System32\drivers\stagedrv.sys
#   sc.exe create stagedrv type= kernel start= demand binPath= System32\drivers\stagedrv.sys
#   sc.exe start stagedrv
#   sc.exe query stagedrv
#
# binPath of a kernel service: a relative path such as System32\drivers\stagedrv.sys is
# taken relative to %SystemRoot% by the I/O manager; \SystemRoot\System32\drivers\... is
# the same; a full C:\... path also works (the service manager stores it as \??\C:\...).
# Never put quotes around it: for drivers the quotes become part of the path.
#
# -Parameters writes REG_DWORD values under ...\Services\stagedrv\Parameters (the names in
# src/config.rs); values not given keep what is there (absent = the driver's default).
# -ResetParameters deletes the key first. DriverEntry reads it, so it applies from the
# next start.
param(
    [string]$Sys,
    [hashtable]$Parameters = @{},
    [switch]$ResetParameters
)
. "$PSScriptRoot\common.ps1"
Assert-Administrator

if (-not $Sys) {
    $found = @(@('stagedrv-signed.sys', 'stagedrv.sys') |
        ForEach-Object { Join-Path $PSScriptRoot $_ } | Where-Object { Test-Path $_ })
    if ($found.Count -eq 0) { throw "No -Sys given and no stagedrv-signed.sys or stagedrv.sys in $PSScriptRoot" }
    $Sys = $found[0]
    if ($found.Count -gt 1) { Write-Host "Both $($found -join ' and ') are here: installing the first (choose with -Sys)." }
}
$Sys = (Resolve-Path $Sys).Path
$signature = Get-AuthenticodeSignature $Sys
if ($null -eq $signature.SignerCertificate) { throw "$Sys has no embedded signature: sign it first (sign-linux.sh or cargo make)" }
Write-Host "Image: $Sys`n  signer: $($signature.SignerCertificate.Subject) (signature status here: $($signature.Status))"

# A loaded image cannot be replaced: stop first (throws while handles are open).
Stop-Stagedrv
Copy-Item -LiteralPath $Sys -Destination $DriverPath -Force
Write-Host "Copied to $DriverPath"

# create, or (already there) config with the same settings.
$config = @('type=', 'kernel', 'start=', 'demand', 'binPath=', 'System32\drivers\stagedrv.sys')
$verb = if ($null -eq (Get-StagedrvState)) { 'create' } else { 'config' }
Invoke-Sc (@($verb, $ServiceName) + $config) | Out-Null

if ($ResetParameters -and (Test-Path $ParametersKey)) { Remove-Item $ParametersKey -Recurse }
if ($Parameters.Count -gt 0) {
    # New-Item -Force would wipe an existing key's values: create it only when missing.
    if (-not (Test-Path $ParametersKey)) { New-Item -Path $ParametersKey | Out-Null }
    foreach ($name in $Parameters.Keys) {
        # REG_DWORD is 32 bits; New-ItemProperty wants it as a signed Int32.
        $dword = [BitConverter]::ToInt32([BitConverter]::GetBytes([uint32]$Parameters[$name]), 0)
        New-ItemProperty -Path $ParametersKey -Name $name -PropertyType DWord -Value $dword -Force | Out-Null
    }
}
if (Test-Path $ParametersKey) {
    Write-Host 'Parameters:'
    (Get-ItemProperty $ParametersKey).PSObject.Properties | Where-Object { $_.Name -notlike 'PS*' } |
        ForEach-Object { Write-Host ('  {0} = {1}' -f $_.Name, $_.Value) }
} else {
    Write-Host 'Parameters: none (driver defaults)'
}

Start-Stagedrv
Invoke-Sc @('query', $ServiceName) | Out-Null
