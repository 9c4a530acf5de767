/*
 * stagedrv: declarations the kernel exports but mingw-w64 10's wdm.h lacks.
 *
 * tests/cross/build-sys.sh copies this file into the WDKContentRoot tree it
 * assembles under target/cross/wdk and includes it right after mingw-w64's
 * wdm.h, so bindgen (through wdk-sys) sees them like in the real WDK.
 * Only for the Linux cross-build; a Windows build uses the WDK's own headers.
 */
#ifndef STAGEDRV_WDM_SHIM_H
#define STAGEDRV_WDM_SHIM_H

/* Pool flags for ExAllocatePool2 (Windows 10 2004+). The POOL_FLAG_* values
 * themselves are written by hand in wdk-sys, so only the type is needed. */
typedef ULONG64 POOL_FLAGS;

/* ExAllocatePool2 replaces ExAllocatePoolWithTag (which wdk-build blocklists);
 * wdk-alloc's global allocator calls it. ntoskrnl.exe exports it. */
NTKERNELAPI
PVOID
NTAPI
ExAllocatePool2(
  IN POOL_FLAGS Flags,
  IN SIZE_T NumberOfBytes,
  IN ULONG Tag);

#endif /* STAGEDRV_WDM_SHIM_H */
