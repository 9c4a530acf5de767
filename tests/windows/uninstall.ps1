# Stops and removes the sc.exe-installed stagedrv. Elevated. Safe to run again (and on a
# machine where it was never installed).
# Blocked by the execution policy? See "Running the scripts" in common.ps1 (or the README).
#
# The steps are the README's:
#   sc.exe stop stagedrv          (waits for STOPPED; fails while a handle is still open)
#   sc.exe delete stagedrv        (also removes ...\Services\stagedrv, Parameters included)
#   del %SystemRoot%\System32\drivers\stagedrv.sys
. "$PSScriptRoot\common.ps1"
Assert-Administrator

Stop-Stagedrv
if ($null -ne (Get-StagedrvState)) {
    Invoke-Sc @('delete', $ServiceName) -Ok $ERROR_SERVICE_DOES_NOT_EXIST | Out-Null
    # The service manager deletes the service once no one has it open (services.msc
    # showing it, for instance, keeps it "marked for deletion").
    $deadline = (Get-Date).AddSeconds(10)
    while ($null -ne (Get-StagedrvState) -and (Get-Date) -lt $deadline) { Start-Sleep -Milliseconds 250 }
    if ($null -ne (Get-StagedrvState)) {
        Write-Warning 'stagedrv is marked for deletion; it goes when every program that has the service open (services.msc, ...) closes it, or at the next reboot.'
    }
}
if (Test-Path $DriverPath) {
    Remove-Item -LiteralPath $DriverPath -Force
    Write-Host "Removed $DriverPath"
}
if ($null -eq (Get-StagedrvState)) { Write-Host 'stagedrv is not installed.' }
