// Package embedded is Millstream's default log: segment files on the local
// disk, written and read by this process only. It implements log.Log.
//
// # Files
//
//	<dir>/LOCK                                 flock'ed while open; holds the owner's pid
//	<dir>/consumer-offsets.json                snapshot of the committed offsets of every group
//	<dir>/consumer-offsets.journal             commits since the snapshot (see offsets.go)
//	<dir>/topics/<topic>/topic.json            partitions and retention
//	<dir>/topics/<topic>/<p>/start-offset      log start offset set by DeleteRecordsBefore
//	<dir>/topics/<topic>/<p>/<base>.log        segment: record batches from offset <base>
//	<dir>/topics/<topic>/<p>/<base>.index      sparse offset index of a sealed segment
//	<dir>/topics/<topic>/<p>/<base>.timeindex  time index of a sealed segment
//
// <base> is the segment's first offset, zero-padded to 20 digits so names
// sort by offset. Small metadata files (topic.json, start-offset,
// consumer-offsets.json, indexes) are written atomically: temp file, fsync,
// rename, fsync of the directory. Offset commits are appended to the
// journal, one CRC-framed entry per commit and one fdatasync shared by the
// commits that arrive together; the journal is folded into the snapshot
// when it passes 1 MiB and at Close, and a torn journal tail (a commit never
// acknowledged) is truncated at Open. A topic is built in a staging directory
// and renamed into place, so a crash never leaves half a topic.
//
// # Segments and framing
//
// A segment is a sequence of record batches. A batch is framed by its length
// and a CRC32C (Castagnoli) of everything after the CRC field, so a reader
// can tell a complete batch from a torn or corrupt one without any other
// file. Integers are big-endian:
//
//	off size field
//	0   4    length      bytes after this field
//	4   4    crc         CRC32C of bytes [8, 4+length)
//	8   1    magic       1
//	9   8    baseOffset  offset of the first record
//	17  4    count       records in the batch (>= 1)
//	21  8    firstTs     first record's timestamp, ms since the epoch
//	29  8    maxTs       largest timestamp in the batch, ms
//	37  ...  count records, each:
//	         varint  timestamp - firstTs
//	         varint  key length (-1 = nil), key
//	         varint  value length (-1 = nil), value
//	         uvarint header count, then per header:
//	                 uvarint key length, key, varint value length (-1 = nil), value
//
// A batch is at most 1 MiB plus one record (records are at most
// MaxRecordBytes); a length beyond that is corruption, so a damaged length
// field cannot make a reader allocate without bound. Offsets are dense: a batch
// holds records baseOffset .. baseOffset+count-1, and each batch starts
// where the previous one ended. Timestamps are milliseconds.
//
// The offset index (.index) holds 8-byte entries (offset - base as uint32,
// file position as uint32), one for at least every 4 KiB of segment, so Fetch seeks close to its offset and scans
// at most a few KiB. The time index (.timeindex) holds 16-byte entries at
// the same positions (int64 ms, uint32 offset - base, uint32 position):
// the largest timestamp of all records before that position; because it is
// monotonic even when record timestamps are not, OffsetForTime can start
// at the last entry below the target time and scan forward. Indexes of the
// active segment live in memory and are written when the segment is sealed
// (rolled); after a restart they are rebuilt by the recovery scan.
//
// The active (last) segment rolls when it reaches SegmentBytes or is older
// than SegmentAge at the next append. Retention (per topic, by age of a
// segment's newest record and by the partition's total size) deletes whole
// sealed segments, oldest first, never the active one. DeleteRecordsBefore
// moves the persisted log start offset and deletes the segments wholly
// below it.
//
// # Writing and fsync policy
//
// Each partition has one writer goroutine; Produce hands records to it
// through a queue and returns. With Fsync "group" (the default) the writer
// takes everything queued, encodes it into one batch in a reused buffer and
// writes it with one write call; it keeps doing so while more records are
// queued, until FsyncBytes are unsynced or FsyncInterval has passed, then
// fsyncs once and only then calls the promises of every record that fsync
// covered (ProduceSync waits for them). Records arriving during an fsync
// form the next group, so under load many appends share one fsync while a
// lone appender pays about one fsync. So under light load the disk is
// flushed almost once per append; FsyncMinInterval spaces the fsyncs of a
// partition out (records arriving meanwhile are written and share the next
// one) where flushes are slow or wear the storage. With Fsync "always" every
// record is written and fsynced on its own.
//
// When 1 MiB or more is queued, the writer encodes several batches into
// one aligned buffer and writes them with O_DIRECT, past the page cache,
// unless NoDirectIO is set or the filesystem refuses it. On virtual machines
// the page cache's writeback was several times slower than the disk. A
// direct write starts at the block holding the segment's end: it rewrites
// that block's bytes, unchanged, and pads the last block with zeros. The
// padding is the same zero tail that preallocation leaves (see direct.go).
//
// Readers (Fetch, OffsetForTime) see only bytes that have been fsynced: the
// partition's end offset is the durable high watermark, so nothing read can
// disappear in a crash. Fetch with Wait blocks on a channel the writer
// closes after each fsync; there is no polling. A reader copies the
// published state of the segments it needs under the partition's lock and
// reads the files without it, so a slow or preempted reader never holds up
// the writer's next group commit.
//
// Backpressure: records produced but not yet durable count against
// MaxBufferedBytes (log-wide); Produce blocks while it is exceeded, until
// there is room or its context ends.
//
// A write or fsync error stops the partition: it fails every later append
// with that error rather than risk acknowledging bytes the disk did not
// take (after a failed fsync the kernel may have dropped dirty pages).
// Reopening the log recovers.
//
// # Recovery
//
// Open takes the directory lock (a second process gets an error naming the
// pid that holds it), then for every partition checks its segments: a
// sealed segment's index files are loaded and checked (entry sizes,
// monotonic offsets and positions within the file); if they are missing or
// inconsistent they are rebuilt by scanning the segment. Every segment is
// verified from its last index entry to its end (the active segment, whose
// indexes are written only when it is sealed, is always scanned whole). The
// first batch with a bad length, bad CRC, undecodable records, an offset
// that does not follow its predecessor, or that is cut short ends the valid
// data: the file is truncated there and fsynced, a warning is logged and a
// RecoveryReport is kept (Recovered). New appends continue at the next
// offset. Because acknowledged records were fsynced, truncation only ever
// removes records whose producers were never told they were stored.
package embedded
