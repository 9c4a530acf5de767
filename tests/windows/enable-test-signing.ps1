# Prepares a Windows 10/11 x64 test VM to load the test-signed stagedrv.sys.
# Run once, elevated, then reboot when it says so. Running it again changes nothing.
# Blocked by the execution policy? See "Running the scripts" in common.ps1 (or the README).
#
#   .\enable-test-signing.ps1 [-Certificate <file.cer>]
#
# - Secure Boot must be off: with Secure Boot on, the testsigning boot option is
#   protected by Secure Boot policy and bcdedit refuses to set it. Turn it off in the VM's
#   firmware settings (Hyper-V: Set-VMFirmware <vm> -EnableSecureBoot Off, with the VM off).
# - BitLocker: a protected system drive asks for its recovery key at the next boot
#   after the boot configuration changes (Secure Boot off, test signing on). This
#   script stops while protection is on; suspend it first, best before turning Secure
#   Boot off: Suspend-BitLocker -MountPoint C: -RebootCount 2.
# - bcdedit /set testsigning on, effective after the next reboot (the desktop then shows
#   "Test Mode"). In test mode the loader accepts a driver signed with any certificate:
#   the chain need not reach a trusted root.
# - The test certificate goes into LocalMachine\Root and LocalMachine\TrustedPublisher.
#   Loading does not need that; it makes Get-AuthenticodeSignature (install.ps1) and
#   `signtool verify /pa` report the signature Valid, and lets pnputil install the INF
#   package without a prompt. -Certificate defaults to stagedrv-test.cer (made by
#   tests/windows/sign-linux.sh) or, failing that, WDRLocalTestCert.cer (from the
#   `cargo make` package folder), next to this script: the one that signed the image
#   you install.
param([string]$Certificate)
. "$PSScriptRoot\common.ps1"
Assert-Administrator

if (-not $Certificate) {
    $found = @(@('stagedrv-test.cer', 'WDRLocalTestCert.cer') |
        ForEach-Object { Join-Path $PSScriptRoot $_ } | Where-Object { Test-Path $_ })
    if ($found.Count -eq 0) { throw "No -Certificate given and no stagedrv-test.cer or WDRLocalTestCert.cer in $PSScriptRoot" }
    $Certificate = $found[0]
    if ($found.Count -gt 1) { Write-Host "Both $($found -join ' and ') are here: using the first (choose with -Certificate)." }
}

# Secure Boot (Confirm-SecureBootUEFI throws on BIOS firmware, which has none).
$secureBoot = $null
try { $secureBoot = Confirm-SecureBootUEFI } catch { Write-Host "Secure Boot: not available ($($_.Exception.Message))" }
if ($secureBoot) {
    throw 'Secure Boot is on, so test signing cannot be enabled. Turn Secure Boot off in the VM firmware settings and run this again.'
}
if ($null -ne $secureBoot) { Write-Host 'Secure Boot: off' }

# SystemStartOptions lists the options the running system booted with.
$booted = (Get-ItemProperty 'HKLM:\SYSTEM\CurrentControlSet\Control').SystemStartOptions

# BitLocker, only while test signing still has to change (the cmdlets exist only where
# the BitLocker feature is installed).
if ($booted -notmatch '\bTESTSIGNING\b' -and (Get-Command Get-BitLockerVolume -ErrorAction SilentlyContinue)) {
    $volume = $null
    try { $volume = Get-BitLockerVolume -MountPoint $env:SystemDrive } catch { Write-Host "BitLocker: cannot query ($($_.Exception.Message))" }
    if ($null -ne $volume -and "$($volume.ProtectionStatus)" -eq 'On') {
        throw "BitLocker protects ${env:SystemDrive}: with the boot configuration changed, the next boot would ask for the recovery key. " +
              "Suspend it first (Suspend-BitLocker -MountPoint $env:SystemDrive -RebootCount 2), then run this again."
    }
}

# Test signing.
& bcdedit.exe /set testsigning on
if ($LASTEXITCODE -ne 0) { throw "bcdedit /set testsigning on failed with exit code $LASTEXITCODE" }

# The certificate, into both machine stores (skipped where it is already).
$cert = New-Object System.Security.Cryptography.X509Certificates.X509Certificate2 (Resolve-Path $Certificate).Path
Write-Host "Certificate: $($cert.Subject), thumbprint $($cert.Thumbprint), valid until $($cert.NotAfter)"
foreach ($store in 'Root', 'TrustedPublisher') {
    if (Test-Path "Cert:\LocalMachine\$store\$($cert.Thumbprint)") {
        Write-Host "  already in LocalMachine\$store"
    } else {
        Import-Certificate -FilePath $Certificate -CertStoreLocation "Cert:\LocalMachine\$store" | Out-Null
        Write-Host "  imported into LocalMachine\$store"
    }
}

if ($booted -match '\bTESTSIGNING\b') {
    Write-Host 'Test signing is active in this boot: nothing else to do.'
} else {
    Write-Host 'Test signing is set for the next boot: REBOOT NOW (Restart-Computer), then run install.ps1.'
}
