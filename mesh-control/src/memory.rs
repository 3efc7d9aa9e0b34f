//! Handing freed heap back to the kernel after configuration is loaded. The
//! only module of the control plane with `unsafe`: one libc call, isolated
//! here (mesh-proxy does the same in its own `memory` module).
//!
//! Loading a file builds its whole YAML tree before validating it: tens of
//! MiB for a big file, or for a rejected YAML bomb whose aliases expand up to
//! the loader's budget. glibc keeps freed memory for reuse, and with the
//! long-lived configuration interleaved it cannot shrink the heap from the
//! top: without this, every such file left the control plane's RSS higher.

/// Returns the allocator's free pages to the kernel. A no-op off glibc
/// (other allocators return memory by themselves).
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[expect(unsafe_code)]
    // SAFETY: malloc_trim takes no pointers; it walks glibc's own free lists
    // under the allocator's locks and madvises whole free pages away.
    unsafe {
        libc::malloc_trim(0);
    }
}
