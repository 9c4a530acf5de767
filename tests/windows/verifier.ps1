# Driver Verifier for stagedrv on the test VM. Elevated. Every mode replaces the previous
# settings, so running one again changes nothing.
# Blocked by the execution policy? See "Running the scripts" in common.ps1 (or the README).
#
#   .\verifier.ps1 -Mode standard   verifier /standard /driver stagedrv.sys          (reboot)
#   .\verifier.ps1 -Mode lowres     standard checks + Systematic low resources simulation (reboot)
#   .\verifier.ps1 -Mode query      verifier /querysettings, then verifier /query (counters)
#   .\verifier.ps1 -Mode reset      verifier /reset                                    (reboot)
#
# Settings made with standard/lowres/reset take effect at the next boot: reboot, then
# install.ps1 and run-tests.ps1 as usual. Standard = special pool, forced IRQL checking,
# pool tracking, I/O verification, deadlock detection, DMA, security, miscellaneous and
# DDI compliance checks (and WDF, irrelevant for WDM).
#
# Systematic low resources simulation fails each distinct call stack's allocation (and
# other resource calls) the first time it is seen, so DriverEntry's and the dispatch
# routines' error paths run; expect `sc.exe start` or some scenarios to fail by design
# while it is on -- what matters is that nothing bug-checks and nothing leaks. Its switch:
#   Windows 11:                  verifier /rc <classes> 19 36 /driver stagedrv.sys
#                                (rule class 19 needs DIF mode, class 36)
#   Windows 10 1803 and later:   verifier /rc <classes> 19 /driver stagedrv.sys
#   older Windows 10:            verifier /flags 0x609BB /driver stagedrv.sys
#                                (0x209BB = /standard, 0x40000 = systematic simulation)
# where <classes> = 1 2 4 5 6 8 9 12 18 34, the rule classes of /standard.
# `verifier /faultssystematic querystatistics` shows what it injected.
#
# Reading results: a violation bug-checks the VM (0xC4 DRIVER_VERIFIER_DETECTED_VIOLATION
# with parameter 1 naming the rule, 0xC9 DRIVER_VERIFIER_IOMANAGER_VIOLATION, 0xC7, 0xCE,
# ...; the README lists the usual ones). Attach a kernel debugger, or open the dump
# (%SystemRoot%\MEMORY.DMP) in WinDbg and run !analyze -v. Useful WinDbg commands:
#   !verifier                    Verifier state and global counters
#   !verifier 3 stagedrv.sys     stagedrv's outstanding pool allocations (pool tracking)
#   !verifier 0x800              stacks of the most recent injected failures (systematic)
# Without a crash, `verifier /query` shows the live counters per verified driver (current
# and peak pool allocations...): after `sc.exe stop stagedrv` the driver is unloaded, and
# a leak at unload would have been a 0xC4/0x62 bug check.
# Check once, not yet seen on Windows: the driver allocates its pool through a pointer
# from MmGetSystemRoutineAddress (src/pool.rs), not through an import. With the driver
# started under Verifier, `verifier /query` should show non-zero pool allocations for
# stagedrv.sys; if they stay 0, pool tracking and the low resources simulation do not
# see those allocations.
# Debug output (DbgPrintEx, component DPFLTR_IHVDRIVER_ID): see debug-filter.txt.
param([ValidateSet('standard', 'lowres', 'query', 'reset')][string]$Mode = 'query')
. "$PSScriptRoot\common.ps1"
Assert-Administrator

function Invoke-Verifier([string[]]$Arguments) {
    Write-Host "> verifier $($Arguments -join ' ')"
    & verifier.exe @Arguments
    # verifier.exe's exit codes are not documented: the settings are checked below instead.
    Write-Host "  [exit $LASTEXITCODE]"
}

$standardClasses = @('1', '2', '4', '5', '6', '8', '9', '12', '18', '34')
$build = [int](Get-ItemProperty 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion').CurrentBuildNumber
switch ($Mode) {
    'standard' { Invoke-Verifier @('/standard', '/driver', 'stagedrv.sys') }
    'lowres' {
        if ($build -ge 22000)     { Invoke-Verifier (@('/rc') + $standardClasses + @('19', '36', '/driver', 'stagedrv.sys')) }
        elseif ($build -ge 17134) { Invoke-Verifier (@('/rc') + $standardClasses + @('19', '/driver', 'stagedrv.sys')) }
        else                      { Invoke-Verifier @('/flags', '0x609BB', '/driver', 'stagedrv.sys') }
    }
    'reset' { Invoke-Verifier @('/reset') }
    'query' { Invoke-Verifier @('/querysettings'); Invoke-Verifier @('/query'); return }
}

# What the next boot will verify.
$settings = & verifier.exe /querysettings | Out-String
Write-Host $settings
$listed = $settings -match '(?i)\bstagedrv\.sys\b'
if ($Mode -eq 'reset' -and $listed) { throw 'verifier /reset did not take: stagedrv.sys is still listed' }
if ($Mode -ne 'reset' -and -not $listed) { throw "verifier did not take: stagedrv.sys is not among the verified drivers" }
Write-Host 'Reboot for this to take effect (Restart-Computer).'
