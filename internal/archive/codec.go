package archive

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
	"github.com/parquet-go/parquet-go/compress"
	pqzstd "github.com/parquet-go/parquet-go/compress/zstd"
	"github.com/parquet-go/parquet-go/format"
)

// zstdCodec is Parquet's ZSTD codec with one encoder kept for the life of
// an Archiver. parquet-go's own codec keeps its encoders in a pool that
// every garbage collection empties, and a new encoder costs megabytes of
// tables to set up: at a segment's pace that was most of the archiver's
// CPU under the race detector, and a good share without it. An Encoder's
// EncodeAll is safe for concurrent use. Files it writes are ordinary ZSTD
// Parquet (readers use their own decoder).
type zstdCodec struct {
	enc  *zstd.Encoder
	read pqzstd.Codec
}

var _ compress.Codec = (*zstdCodec)(nil)

func newZstdCodec() (*zstdCodec, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderConcurrency(2), // IN and OUT commit at once
		// Level 1: on the archive's pages (mostly dictionary indexes and
		// delta-encoded numbers) it made files no larger than the default
		// level 3 (48.1 against 48.4 MiB per million moves of IN) for about
		// 12 % less of the writing's CPU (BENCHMARKS.md, "Bringing the
		// archiver's cost down").
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithZeroFrames(true),
		zstd.WithEncoderCRC(false),
	)
	if err != nil {
		return nil, fmt.Errorf("archive: zstd: %w", err)
	}
	return &zstdCodec{enc: enc}, nil
}

func (c *zstdCodec) String() string                            { return "ZSTD" }
func (c *zstdCodec) CompressionCodec() format.CompressionCodec { return format.Zstd }
func (c *zstdCodec) Encode(dst, src []byte) ([]byte, error) {
	return c.enc.EncodeAll(src, dst[:0]), nil
}
func (c *zstdCodec) Decode(dst, src []byte) ([]byte, error) { return c.read.Decode(dst, src) }
