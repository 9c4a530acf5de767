@echo off
rem stagedrv test VM bootstrap (copy to C:\stagedrv-vm\bootstrap.cmd once; tests/vm/README.md).
rem The logon task runs it elevated; it runs autotest.cmd from the payload disk the VM
rem harness attaches (the first drive that has one), with that drive as its argument.
rem Without a payload disk it does nothing, so the VM can still be used by hand.
set AUTOTEST_DRIVE=
for %%d in (D E F G H I J K L M N O P Q R S T U V W X Y Z) do if not defined AUTOTEST_DRIVE if exist %%d:\autotest.cmd set AUTOTEST_DRIVE=%%d:
if not defined AUTOTEST_DRIVE exit /b 0
cd /d %AUTOTEST_DRIVE%\
call %AUTOTEST_DRIVE%\autotest.cmd %AUTOTEST_DRIVE%
