# Runs stagetest.exe against the installed driver, then stops the driver and shows that
# it really unloaded. Elevated (the devices admit SYSTEM and Administrators only, unless
# OpenToEveryone=1). Exits with stagetest's status.
# Blocked by the execution policy? See "Running the scripts" in common.ps1 (or the README).
#
#   .\run-tests.ps1 [-StageTest <path\stagetest.exe>] [-TestArgs <more stagetest arguments>]
#   e.g. .\run-tests.ps1 -TestArgs '--only', 'cancel-io,stress', '--threads', '8'
#
# The steps are the README's:
#   sc.exe start stagedrv                  (if it is not running)
#   .\stagetest.exe --backend win32
#   sc.exe stop stagedrv
#   sc.exe query stagedrv                  -> STATE : 1 STOPPED
#
# About `sc.exe stop` while handles are open: a legacy driver cannot be unloaded while a
# handle to one of its devices (\\.\StageDrvN) is open. The stop request is accepted,
# the devices are marked unload-pending (new opens fail), and `sc.exe query stagedrv`
# shows STATE : 3 STOP_PENDING until the last handle closes; only then does DriverUnload
# run and the state become 1 STOPPED. stagetest has closed all its handles when it
# exits, so here the stop must end in STOPPED within seconds; if it stays STOP_PENDING,
# something else holds a handle (or the driver leaked a reference) and this script fails.
param(
    [string]$StageTest = (Join-Path $PSScriptRoot 'stagetest.exe'),
    [string[]]$TestArgs = @()
)
. "$PSScriptRoot\common.ps1"
Assert-Administrator

if (-not (Test-Path $StageTest)) {
    throw "No $StageTest. Build it with cargo build --release -p stagetest (target\release\stagetest.exe) on Windows, " +
          'or tests/wine/build-app.sh on Linux (target/wine/stagetest.exe: a debug x86_64-win7-windows-gnu build, fine on Windows 10/11).'
}
$state = Get-StagedrvState
if ($null -eq $state) { throw 'stagedrv is not installed: run install.ps1 first' }
if ($state -ne 'RUNNING') { Start-Stagedrv }

$status = 1
try {
    Write-Host "> $StageTest --backend win32 $($TestArgs -join ' ')"
    & $StageTest --backend win32 @TestArgs
    $status = $LASTEXITCODE
    Write-Host "stagetest exit status: $status"
} finally {
    Stop-Stagedrv
    Invoke-Sc @('query', $ServiceName) | Out-Null
}
exit $status
