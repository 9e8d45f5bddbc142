package embedded

import (
	"fmt"
	"sync"
	"unsafe"
)

// Direct I/O. Large batches are written with O_DIRECT, past the page cache.
//
// Why: on the virtual machines this project runs on, the page cache's
// writeback is the bottleneck of bulk appends. Buffered 1 MiB writes with
// an fdatasync every 16 MiB reached 316-437 MB/s where O_DIRECT writes of
// the same chunks reached 1.8-2.2 GB/s on the same disk. Buffered writes also
// pay for every fresh page-cache page, which the hypervisor backs on first
// touch. Small batches stay buffered. They are the MQTT case: many small
// group commits, each a flush, whose records the normaliser reads back at
// once from the page cache.
//
// O_DIRECT needs the file offset, the length and the memory aligned to the
// device's block size (dioAlign covers 512-byte and 4 KiB devices). A batch
// rarely starts on a block boundary, so a direct write starts at the block
// holding the segment's end. It rewrites that block's existing bytes, which
// it reads first, then the batch, then zeros up to the next block boundary.
// The rewritten bytes are identical to those on disk, so a write torn
// at any sector leaves them intact: a sector holds either the old or the new
// copy of the same bytes. The zeros past the batch are the same zero tail
// that preallocation leaves. Later appends overwrite it, trimPrealloc cuts
// it when the segment is sealed or closed, and recovery drops it silently.
//
// Fsync is unchanged. fdatasync on the segment's ordinary descriptor flushes
// the device's write cache, and it commits the file size a direct write
// extended, as it does after a buffered write.
//
// Readers keep reading through the ordinary descriptor. A direct write
// drops the page-cache pages of the range it wrote, so a reader of those
// bytes reads them from the disk. The published bytes they read are the same
// before and after the write.
//
// Where O_DIRECT is not available (another OS, tmpfs, some network
// filesystems), or the first direct write is refused as misaligned, the
// log writes buffered from then on and says so once.
const (
	dioAlign = 4096
	// directMin is the fewest queued bytes written directly: a full
	// batch. Direct writes of 256 KiB were already 3 times as fast as
	// buffered ones here, but the pages a direct write covers leave the
	// page cache, and consumers that follow the log closely (the
	// normaliser behind mqtt.ingress) read what was just written. At 1 MiB
	// only bulk appends qualify; an MQTT broker at 80,000 msg/s queues a
	// few tens of KiB between group commits.
	directMin = 1 << 20
	// directMaxWrite is about the most one direct write carries: several
	// batches, so the disk sees large writes.
	directMaxWrite = 4 << 20
)

// openDirectFile opens a segment for direct writes; tests replace it.
var openDirectFile = openDirect

// directFile is the O_DIRECT descriptor of a partition's active segment.
// Only the partition's writer uses it.
type directFile struct {
	seg   *segment
	fd    int
	notes []batchNote
}

// dioBuffers holds the aligned buffers direct writes are encoded into,
// shared by all partitions: their memory follows how many partitions
// write in bulk at the same moment, not how many partitions there are.
var dioBuffers = sync.Pool{New: func() any {
	b := alignedBuffer(directMaxWrite + dioAlign)
	return &b
}}

// alignedBuffer returns a zeroed slice of n bytes whose first byte sits on
// a dioAlign boundary.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+dioAlign)
	off := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (dioAlign - 1))
	if off != 0 {
		off = dioAlign - off
	}
	return b[off : off+n : off+n]
}

// close closes the descriptor, if any.
func (d *directFile) close() error {
	if d.seg == nil {
		return nil
	}
	d.seg = nil
	return closeDirect(d.fd)
}

// directOK reports whether the records of q go through O_DIRECT.
func (p *partition) directOK(q []pending) bool {
	return !p.l.opts.NoDirectIO && !p.l.noDirect.Load() && queuedAtLeast(q, directMin)
}

// disableDirect turns direct writes off for the whole log after err, with
// one message saying why.
func (p *partition) disableDirect(err error) {
	_ = p.dio.close()
	if p.l.noDirect.CompareAndSwap(false, true) {
		p.l.logger.Info("log writes large batches through the page cache: direct I/O is not available here",
			"dir", p.l.dir, "reason", err)
	}
}

// batchNote is what noteBatch needs of a batch, kept until the write that
// carries it succeeded.
type batchNote struct {
	pos, base, size int64
	count           int
	maxTs           int64
}

// queuedAtLeast reports whether the records of q hold at least n bytes.
func queuedAtLeast(q []pending, n int) bool {
	total := 0
	for i := range q {
		if total += q[i].size; total >= n {
			return true
		}
	}
	return false
}

// writeDirect encodes records from the front of q into batches, as many as
// fit in one direct write of about directMaxWrite bytes (and in the
// segment), and writes them at the end of seg with O_DIRECT (see above). It
// returns how many records and batch bytes it wrote: none, and no error,
// when direct I/O turned out not to be available; the caller then writes
// buffered.
func (p *partition) writeDirect(seg *segment, q []pending) (records int, bytes int64, err error) {
	d := &p.dio
	if d.seg != seg {
		if err := d.close(); err != nil {
			return 0, 0, fmt.Errorf("close direct descriptor: %w", err)
		}
		fd, err := openDirectFile(seg.path)
		if err != nil {
			p.disableDirect(err)
			return 0, 0, nil
		}
		d.seg, d.fd = seg, fd
	}
	bp := dioBuffers.Get().(*[]byte)
	defer dioBuffers.Put(bp)
	dbuf := *bp
	start := seg.size &^ (dioAlign - 1)
	head := int(seg.size - start)

	// Encode straight into the aligned buffer, batch after batch. The
	// encoder's own buffer is put back afterwards.
	e := &p.enc
	own := e.buf
	defer func() { e.buf = own }()
	pos, taken := head, 0
	notes := d.notes[:0]
	for taken < len(q) && pos < directMaxWrite {
		e.buf = dbuf[pos:pos:cap(dbuf)]
		base := seg.wnext + int64(taken)
		e.reset(base)
		n := 0
		for taken+n < len(q) && (n == 0 || len(e.buf) < batchTarget) &&
			(n == 0 || seg.size+int64(pos-head+len(e.buf)) < p.l.opts.SegmentBytes) {
			r := q[taken+n].rec
			r.Offset = base + int64(n)
			e.add(r)
			n++
		}
		b := e.finish()
		if unsafe.SliceData(b) != &dbuf[pos] {
			// It outgrew the buffer (a large record). The first batch
			// gets a buffer of its own size, used once; a later one
			// waits for the next write.
			if taken > 0 {
				break
			}
			nb := alignedBuffer((head + len(b) + 2*dioAlign - 1) &^ (dioAlign - 1))
			copy(nb[head:], b)
			dbuf = nb
		}
		notes = append(notes, batchNote{pos: start + int64(pos), base: base, size: int64(len(b)), count: n, maxTs: e.maxTs})
		pos += len(b)
		taken += n
		if seg.size+int64(pos-head) >= p.l.opts.SegmentBytes {
			break
		}
	}
	d.notes = notes
	padded := (pos + dioAlign - 1) &^ (dioAlign - 1)
	buf := dbuf[:padded]
	if head > 0 {
		if _, err := seg.f.ReadAt(buf[:head], start); err != nil {
			return 0, 0, fmt.Errorf("read the block a direct write rewrites: %w", err)
		}
	}
	clear(buf[pos:])
	if err := pwriteDirect(d.fd, buf, start); err != nil {
		if isDirectRefused(err) && p.l.m.directWrites.Load() == 0 {
			// Refused before any direct write succeeded: this filesystem
			// has other alignment rules. Nothing was written.
			p.disableDirect(err)
			return 0, 0, nil
		}
		return 0, 0, err
	}
	p.l.m.directWrites.Add(1)
	for _, nt := range notes {
		seg.noteBatch(nt.pos, nt.base, nt.count, nt.maxTs, nt.size)
	}
	seg.alloc = max(seg.alloc, start+int64(padded))
	return taken, int64(pos - head), nil
}
