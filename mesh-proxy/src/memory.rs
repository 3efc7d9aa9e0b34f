//! Handing memory back to the kernel after start-up work. The only module
//! of the proxy with `unsafe`: two libc calls, isolated here.
//!
//! Reading a bootstrap (or rendering `/config_dump`) goes through the
//! descriptor pool of Envoy's protos: tens of MiB of heap, and the 3.3 MiB
//! descriptor set in the binary's read-only data. Once the pool is dropped
//! both would otherwise stay in the proxy's RSS for its whole life.

/// Returns the allocator's free pages to the kernel. glibc keeps freed heap
/// memory for reuse, and the pool's allocations are interleaved with
/// long-lived configuration, so the heap cannot shrink from the top on its
/// own. Other allocators return memory by themselves: a no-op off glibc.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[expect(unsafe_code)]
    // SAFETY: malloc_trim takes no pointers; it walks glibc's own free lists
    // under the allocator's locks and madvises whole free pages away.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops this process's resident pages of `bytes`, static data of the
/// binary, until they are read again. Only done when the pages lie in a
/// read-only, private mapping of a file, where the kernel reloads them from
/// the file on the next access: the contents never change.
pub fn release_static(bytes: &'static [u8]) {
    #[cfg(target_os = "linux")]
    {
        let page = 4096usize;
        let first = bytes.as_ptr() as usize;
        let start = first.div_ceil(page) * page;
        let end = (first + bytes.len()) / page * page;
        if end <= start || !read_only_file_mapping(start, end) {
            return;
        }
        #[expect(unsafe_code)]
        // SAFETY: [start, end) is whole pages of a read-only private file
        // mapping (checked above); MADV_DONTNEED on such pages only drops
        // them from the page tables, and a later read faults the same bytes
        // back in from the file. No Rust reference sees different contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// Whether `/proc/self/maps` shows [start, end) inside one mapping that is
/// backed by a file, readable, not writable and private.
#[cfg(target_os = "linux")]
fn read_only_file_mapping(start: usize, end: usize) -> bool {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return false;
    };
    maps.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [range, perms, _offset, _device, inode, path, ..] = fields.as_slice() else {
            return false;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            return false;
        };
        let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        else {
            return false;
        };
        lo <= start
            && end <= hi
            && perms.as_bytes().first() == Some(&b'r')
            && perms.as_bytes().get(1) == Some(&b'-')
            && perms.ends_with('p')
            && *inode != "0"
            && path.starts_with('/')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large enough to span whole pages.
    static DATA: [u8; 64 * 1024] = {
        let mut d = [0u8; 64 * 1024];
        let mut i = 0;
        while i < d.len() {
            d[i] = (i % 251) as u8;
            i += 1;
        }
        d
    };

    #[test]
    fn released_static_data_reads_back_unchanged() {
        let before: u64 = DATA.iter().map(|&b| u64::from(b)).sum();
        // The test binary's read-only data is such a mapping: the release
        // really happens here.
        #[cfg(target_os = "linux")]
        {
            let start = (DATA.as_ptr() as usize).div_ceil(4096) * 4096;
            assert!(read_only_file_mapping(start, start + 4096));
        }
        release_static(&DATA);
        let after: u64 = std::hint::black_box(&DATA)
            .iter()
            .map(|&b| u64::from(b))
            .sum();
        assert_eq!(before, after);
        assert!(DATA.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }

    #[test]
    fn heap_trim_is_harmless() {
        let v: Vec<Vec<u8>> = (0..1000).map(|i| vec![1u8; 100 + i]).collect();
        drop(v);
        release_free_heap();
        let w = vec![7u8; 1 << 20];
        assert!(w.iter().all(|&b| b == 7));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn writable_and_anonymous_memory_is_never_released() {
        let heap = vec![1u8; 1 << 16];
        let start = (heap.as_ptr() as usize).div_ceil(4096) * 4096;
        assert!(!read_only_file_mapping(start, start + 4096));
    }
}
