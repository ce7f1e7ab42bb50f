//go:build !unix

package graph

import (
	"io"
	"os"
)

// mmapFile reads the file into aligned memory where mmap is not available.
func mmapFile(f *os.File, size int) ([]byte, error) {
	b := alignedBytes(size)
	_, err := io.ReadFull(f, b)
	return b, err
}

func munmap([]byte) error { return nil }

func adviseDontNeed([]byte) error { return nil }
