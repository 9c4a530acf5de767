#!/usr/bin/env bash
# Runs the real driver image and the real test app under Wine (Debian wine64 8.0):
#
#   tests/wine/run.sh [--sys FILE] [--app FILE] [--work DIR] [--fresh-prefix] [-- STAGETEST-ARGS...]
#
#   --sys FILE   driver image to install (default target/cross/stagedrv.sys)
#   --app FILE   test app (default target/wine/stagetest.exe, from build-app.sh)
#   --work DIR   where the run's prefix and logs go (default target/wine/run)
#   --fresh-prefix  make the pristine prefix anew (wineboot -i) even if one is cached
#   --keep-prefix   keep the run's prefix (DIR/prefix, ~700 MB) for a look afterwards
#   STAGETEST-ARGS  passed to stagetest after `--backend win32 --wine --scenario-timeout 30`
#
# In ONE Wine session (`wine64 cmd /c run.bat`; the session, and with it the driver,
# ends about two seconds after its last process): sc create, the Parameters key,
# sc start, stagetest, sc stop (waiting for STOPPED), sc delete. WINEDEBUG=warn+debugstr
# is set in the process that starts the session, so the driver's DbgPrintEx lines
# land in Wine's log (winedevice.exe inherits it).
#
# Then, from Wine's log: DriverEntry and DriverUnload ran ("stagedrv: DriverEntry:
# done", "stagedrv: Unload: done"), the six "Unload: stage N" lines appear in order
# 1..6, and no "Unimplemented function" line names ntoskrnl. Any failure prints the
# relevant part of the log. Exit status 0 only if everything held.
#
# The prefix: a pristine one is made once with `wineboot -i` (target/wine/prefix-
# template, stamped with the Wine version) and each run works on a fresh copy of it
# (about a second), so nothing a run does can leak into the next one.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
sys=$root/target/cross/stagedrv.sys
app=$root/target/wine/stagetest.exe
work=$root/target/wine/run
app_args=()
fresh=0
keep=0
while (($#)); do
    case $1 in
        --sys) sys=$2; shift 2 ;;
        --app) app=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --fresh-prefix) fresh=1; shift ;;
        --keep-prefix) keep=1; shift ;;
        --) shift; app_args=("$@"); break ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ -f $sys ]] || { echo "run.sh: no driver image at $sys (tests/cross/build-sys.sh builds it)" >&2; exit 2; }
[[ -f $app ]] || { echo "run.sh: no test app at $app (tests/wine/build-app.sh builds it)" >&2; exit 2; }
sys=$(cd "$(dirname "$sys")" && pwd)/$(basename "$sys")
mkdir -p "$work"
work=$(cd "$work" && pwd)

"$root/tests/cross/ensure-apt.sh" wine64
wine=/usr/lib/wine/wine64       # not /usr/bin/wine: that wrapper sets WINEDEBUG and nags about wine32
wineserver=/usr/lib/wine/wineserver64
export WINEDLLOVERRIDES="mscoree,mshtml="   # no Mono/Gecko install prompts
unset DISPLAY WAYLAND_DISPLAY

t_start=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# --- the prefix ------------------------------------------------------------------
template=$root/target/wine/prefix-template
((fresh == 0)) || rm -f "$template.stamp"
want_stamp="$("$wine" --version) wineboot -i WINEDLLOVERRIDES=$WINEDLLOVERRIDES"
t0=$(date +%s.%N)
if [[ "$(cat "$template.stamp" 2>/dev/null)" != "$want_stamp" || ! -f $template/system.reg ]]; then
    echo "run.sh: creating a pristine Wine prefix (wineboot -i) ..."
    rm -rf "$template" "$template.stamp" "$template.tmp"
    WINEPREFIX=$template.tmp WINEDEBUG=-all "$wine" wineboot -i >"$work/wineboot.log" 2>&1 \
        || { echo "run.sh: wineboot -i failed:" >&2; tail -n 30 "$work/wineboot.log" >&2; exit 1; }
    # The registry reaches the disk when the session ends.
    WINEPREFIX=$template.tmp "$wineserver" -w
    mv "$template.tmp" "$template"
    echo "$want_stamp" >"$template.stamp"
    echo "run.sh: prefix template created in $(since "$t0")s"
fi
prefix=$work/prefix
rm -rf "$prefix"
cp -a "$template" "$prefix"
export WINEPREFIX=$prefix
t_prefix=$(since "$t0")

# --- the session -------------------------------------------------------------------
c=$prefix/drive_c
cp "$sys" "$c/windows/system32/drivers/stagedrv.sys"
mkdir -p "$c/stagetest"
cp "$app" "$c/stagetest/stagetest.exe"
args="--backend win32 --wine --scenario-timeout 30"
for a in "${app_args[@]}"; do args+=" $a"; done
# Lines starting "run.bat:" are the script's own progress; the checks below read them.
sed 's/$/\r/' >"$c/stagetest/run.bat" <<EOF
@echo off
sc create stagedrv type= kernel start= demand binPath= C:\\windows\\system32\\drivers\\stagedrv.sys >nul
echo run.bat: sc create exit %errorlevel%
reg add HKLM\\System\\CurrentControlSet\\Services\\stagedrv\\Parameters /v StatisticsEveryTicks /t REG_DWORD /d 5 /f >nul
echo run.bat: reg add exit %errorlevel%
sc start stagedrv >nul
echo run.bat: sc start exit %errorlevel%
C:\\stagetest\\stagetest.exe $args
echo run.bat: stagetest exit %errorlevel%
sc stop stagedrv >nul
echo run.bat: sc stop exit %errorlevel%
set n=0
:wait_stopped
sc query stagedrv | find "STOPPED" >nul
if not errorlevel 1 goto stopped
set /a n=n+1
if %n% geq 100 goto stopped
ping -n 1 -w 100 127.0.0.1 >nul
goto wait_stopped
:stopped
sc query stagedrv | find "STATE"
sc delete stagedrv >nul
echo run.bat: done
EOF

console=$work/console.log
log=$work/wine.log
echo "run.sh: driver $sys"
echo "run.sh: one Wine session: sc create, sc start, stagetest $args, sc stop"
t1=$(date +%s.%N)
session=0
WINEDEBUG=warn+debugstr timeout --kill-after=5 150 "$wine" cmd /c 'C:\stagetest\run.bat' 2>"$log" | tr -d '\r' | tee "$console" \
    || session=$?
# End the session now (instead of ~2 s later) so that nothing outlives the run.
"$wineserver" -k 2>/dev/null || true
((keep)) || rm -rf "$prefix"
t_session=$(since "$t1")

# --- the checks ----------------------------------------------------------------------
problems=()
step() { # step NAME: the exit status run.bat echoed for NAME, or "missing"
    sed -n "s/^run\.bat: $1 exit \([0-9-]*\)\$/\1/p" "$console" | tail -n 1 | grep . || echo missing
}
((session == 0)) || problems+=("the Wine session ended with status $session$( ((session == 124)) && echo ' (timed out)')")
for s in "sc create" "reg add" "sc start" "stagetest" "sc stop"; do
    status=$(step "$s")
    [[ $status == 0 ]] || problems+=("$s: exit status $status")
done
grep -q "stagedrv: DriverEntry: done" "$log" || problems+=('DriverEntry did not finish: no "stagedrv: DriverEntry: done" line')
grep -q "stagedrv: Unload: done" "$log" || problems+=('DriverUnload did not finish: no "stagedrv: Unload: done" line')
stages=$(grep -o "stagedrv: Unload: stage [0-9]*" "$log" | awk '{ print $NF }' | paste -sd' ' || true)
[[ $stages == "1 2 3 4 5 6" ]] || problems+=("Unload stage lines: [${stages}]; expected [1 2 3 4 5 6] in order")
if grep -i "unimplemented function" "$log" | grep -qi ntoskrnl; then
    problems+=("the driver called an ntoskrnl export Wine does not implement: $(grep -i 'unimplemented function' "$log" | grep -i ntoskrnl | head -n 1)")
fi

echo "run.sh: driver lifecycle in Wine's log:"
grep -a "stagedrv: \(DriverEntry\|Unload\)" "$log" | sed 's/^[0-9a-f]*:warn:debugstr:[A-Za-z]* [0-9a-f:]*: /  /' || echo "  (none)"
echo "run.sh: prefix ${t_prefix}s, Wine session ${t_session}s, total $(since "$t_start")s"
if ((${#problems[@]})); then
    echo "run.sh: FAILED:"
    printf '  - %s\n' "${problems[@]}"
    echo "run.sh: relevant part of Wine's log ($log):"
    grep -a -n -i "stagedrv\|unimplemented\|ntoskrnl\|err:\|wine: \|exception\|backtrace" "$log" | grep -v "nodrv_CreateWindow\|initialize_systray" | tail -n 80 | sed 's/^/  /'
    exit 1
fi
echo "run.sh: OK — DriverEntry and DriverUnload ran, Unload stages 1..6 in order, no unimplemented ntoskrnl call"
