# Prepares a Windows 10/11 x64 test VM to load the test-signed stagedrv.sys.
# Run once, elevated, then reboot when it says so. Running it again changes nothing.
#
#   .\enable-test-signing.ps1 [-Certificate <file.cer>]
#
# - Secure Boot must be off: with Secure Boot on, the testsigning boot option is
#   protected by Secure Boot policy and bcdedit refuses to set it. Turn it off in the VM's
#   firmware settings (Hyper-V: Set-VMFirmware <vm> -EnableSecureBoot Off, with the VM off).
# - bcdedit /set testsigning on, effective after the next reboot (the desktop then shows
#   "Test Mode").
# - The test certificate goes into LocalMachine\Root and LocalMachine\TrustedPublisher.
#   -Certificate defaults to stagedrv-test.cer (made by tests/windows/sign-linux.sh) or,
#   failing that, WDRLocalTestCert.cer (from the `cargo make` package folder), next to
#   this script.
param([string]$Certificate)
. "$PSScriptRoot\common.ps1"
Assert-Administrator

if (-not $Certificate) {
    $Certificate = @('stagedrv-test.cer', 'WDRLocalTestCert.cer') |
        ForEach-Object { Join-Path $PSScriptRoot $_ } | Where-Object { Test-Path $_ } | Select-Object -First 1
    if (-not $Certificate) { throw "No -Certificate given and no stagedrv-test.cer or WDRLocalTestCert.cer in $PSScriptRoot" }
}

# Secure Boot (Confirm-SecureBootUEFI throws on BIOS firmware, which has none).
$secureBoot = $false
try { $secureBoot = Confirm-SecureBootUEFI } catch { Write-Host "Secure Boot: not available ($($_.Exception.Message))" }
if ($secureBoot) {
    throw 'Secure Boot is on, so test signing cannot be enabled. Turn Secure Boot off in the VM firmware settings and run this again.'
}
Write-Host 'Secure Boot: off'

# Test signing. SystemStartOptions lists the options the running system booted with.
$booted = (Get-ItemProperty 'HKLM:\SYSTEM\CurrentControlSet\Control').SystemStartOptions
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
