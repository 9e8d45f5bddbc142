//go:build unix

package embedded

import (
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"
)

// BenchmarkDiskFlush measures what one group commit costs the disk under the
// log, without the log: a 100-byte write into a zero-filled file (as the
// active segment is while groups are small, see preallocate) followed by the
// same datasync the writer does. Besides the time per flush it reports the
// flush's p99 and the CPU time the process spent per flush (user + system,
// getrusage). On the nested-virtualisation host of docs/benchmarks.md a flush
// cost 83-120 µs of CPU, more than the rest of a QoS 1 message's handling
// under load, which is why the broker's CPU per message rises as load falls
// and every message gets its own flush.
func BenchmarkDiskFlush(b *testing.B) {
	path := filepath.Join(benchDir(b), "flush")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	const size = 16 << 20
	zero := make([]byte, 1<<20)
	for pos := 0; pos < size; pos += len(zero) {
		if _, err := f.Write(zero); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	rec := make([]byte, 100)
	lat := make([]time.Duration, 0, b.N)
	cpu0 := processCPU(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := f.WriteAt(rec, int64(i*len(rec))%size); err != nil {
			b.Fatal(err)
		}
		if err := datasync(f); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	cpu := processCPU(b) - cpu0
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
}

// processCPU is the user and system CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
