package embedded

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/millstream/millstream/log"
)

// benchDir is where benchmarks put their logs: MILLSTREAM_BENCH_DIR (so the
// script can measure the same disk as dd), else a temp dir.
func benchDir(b *testing.B) string {
	if d := os.Getenv("MILLSTREAM_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "bench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

// BenchmarkProduce measures append throughput into one partition: ProduceSync
// (each goroutine waits for every record) and Produce (asynchronous, bounded
// by MaxBufferedBytes), 100-byte and 1 KiB values, 1 and 64 goroutines,
// group commit and fsync "always".
func BenchmarkProduce(b *testing.B) {
	for _, fsync := range []string{FsyncGroup, FsyncAlways} {
		for _, api := range []string{"sync", "async"} {
			for _, size := range []int{100, 1024} {
				for _, g := range []int{1, 64} {
					name := fmt.Sprintf("fsync=%s/api=%s/size=%d/goroutines=%d", fsync, api, size, g)
					b.Run(name, func(b *testing.B) {
						benchProduce(b, Options{Fsync: fsync}, api, size, g)
					})
				}
			}
		}
	}
}

// BenchmarkGroupCommitInterval compares FsyncInterval values under load
// (64 goroutines, ProduceSync, 1 KiB) and for a lone appender.
func BenchmarkGroupCommitInterval(b *testing.B) {
	for _, iv := range []time.Duration{50 * time.Microsecond, time.Millisecond, 5 * time.Millisecond} {
		for _, g := range []int{1, 64} {
			b.Run(fmt.Sprintf("interval=%v/goroutines=%d", iv, g), func(b *testing.B) {
				benchProduce(b, Options{FsyncInterval: iv}, "sync", 1024, g)
			})
		}
	}
}

func benchProduce(b *testing.B, opts Options, api string, size, goroutines int) {
	opts.Logger = quietLogger()
	l, err := Open(benchDir(b), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	if err := l.CreateTopic(bg, "bench", log.TopicConfig{Partitions: 1}); err != nil {
		b.Fatal(err)
	}
	value := bytes.Repeat([]byte("m"), size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N / goroutines
	rest := b.N % goroutines
	var errOnce sync.Once
	var firstErr error
	fail := func(err error) { errOnce.Do(func() { firstErr = err }) }
	for g := 0; g < goroutines; g++ {
		n := per
		if g < rest {
			n++
		}
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			if api == "sync" {
				for i := 0; i < n; i++ {
					if err := l.ProduceSync(bg, &log.Record{Topic: "bench", Value: value}); err != nil {
						fail(err)
						return
					}
				}
				return
			}
			var inflight sync.WaitGroup
			inflight.Add(n)
			for i := 0; i < n; i++ {
				l.Produce(bg, &log.Record{Topic: "bench", Value: value}, func(_ *log.Record, err error) {
					if err != nil {
						fail(err)
					}
					inflight.Done()
				})
			}
			inflight.Wait()
		}(n)
	}
	wg.Wait()
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
