//go:build unix

package graph

import (
	"os"
	"syscall"
)

// mmapFile maps the first size bytes of f read-only.
func mmapFile(f *os.File, size int) ([]byte, error) {
	return syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_PRIVATE)
}

func munmap(b []byte) error { return syscall.Munmap(b) }

// adviseDontNeed drops b's pages from the process's resident set.
func adviseDontNeed(b []byte) error { return syscall.Madvise(b, syscall.MADV_DONTNEED) }
