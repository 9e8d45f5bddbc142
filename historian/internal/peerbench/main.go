// Command peerbench ingests the historian's reference data set
// (historian/synth) into the historian and into a VictoriaMetrics
// single-node server in the same run, and prints one JSON line per
// system: samples, ingest rate and bytes per sample on disk.
//
//	go run ./historian/internal/peerbench -vm /path/to/victoria-metrics -tags 1000 -duration 24h
//
// scripts/bench-historian.sh builds VictoriaMetrics and runs it.
//
// The historian gets every sample (and, in a second line, the numeric
// subset VictoriaMetrics gets), in arrival order (every tag's sample
// of one second, then the next second) on one goroutine, flushed and
// compacted; its rate includes encoding and the fsynced write, its size
// is the whole directory (rollups off, to compare raw storage).
//
// VictoriaMetrics stores float64 samples only, so it gets the numeric
// ones (floats, integers, counters, bools as 0/1) and not the string
// states nor null/NaN values (bad-quality episodes); quality is not
// stored. The samples are sent as /api/v1/import JSON lines (one line per
// tag and hour) prepared beforehand, over two connections; the rate is
// samples / (time of the imports plus /internal/force_flush). Its size is
// the -storageDataPath directory after the flush and a settle time for
// background merges.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/millstream/millstream/historian"
	"github.com/millstream/millstream/historian/synth"
	"github.com/millstream/millstream/uns"
)

func main() {
	vmBin := flag.String("vm", "", "victoria-metrics binary (empty: historian only)")
	tags := flag.Int("tags", 1000, "tags")
	dur := flag.Duration("duration", 24*time.Hour, "span of the data set (1 Hz)")
	settle := flag.Duration("settle", 10*time.Second, "wait after VictoriaMetrics' flush before measuring its size")
	flag.Parse()
	if err := run(*vmBin, *tags, *dur, *settle); err != nil {
		fmt.Fprintln(os.Stderr, "peerbench:", err)
		os.Exit(1)
	}
}

func emit(v map[string]any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

func run(vmBin string, tags int, dur time.Duration, settle time.Duration) error {
	set := synth.New(synth.Config{Tags: tags, Duration: dur, Seed: 1})
	tmp, err := os.MkdirTemp("", "peerbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, numericOnly := range []bool{false, true} {
		if err := benchHistorian(set, filepath.Join(tmp, fmt.Sprint("historian-", numericOnly)), numericOnly); err != nil {
			return err
		}
	}
	if vmBin == "" {
		return nil
	}
	return benchVM(set, vmBin, tmp, settle)
}

// benchHistorian stores the data set; with numericOnly just the samples
// VictoriaMetrics gets (see numeric).
func benchHistorian(set *synth.Set, dir string, numericOnly bool) error {
	db, err := historian.Open(historian.Options{Dir: dir, NoRollups: true})
	if err != nil {
		return err
	}
	defer db.Close()
	ids := make([]uint64, set.Tags())
	sigs := make([]*synth.Signal, set.Tags())
	for i := range ids {
		if ids[i], err = db.Series(set.Path(i)); err != nil {
			return err
		}
		sigs[i] = set.Signal(i)
	}
	start := time.Now()
	n, total := 0, 0
	for range set.Samples() {
		for i, g := range sigs {
			t, v, q, _ := g.Next()
			if numericOnly {
				if _, ok := numeric(v); !ok {
					continue
				}
			}
			if err := db.Append(ids[i], t, v, q); err != nil {
				return err
			}
			n++
			total++
		}
		if n >= 5_000_000 { // as the Ingester: bounded memory
			if err := db.Flush(nil); err != nil {
				return err
			}
			n = 0
		}
	}
	if err := db.Flush(nil); err != nil {
		return err
	}
	if err := db.Compact(); err != nil {
		return err
	}
	el := time.Since(start)
	size, err := dirSize(dir)
	if err != nil {
		return err
	}
	note := "one goroutine, Append+Flush(fsync)+Compact, every sample (all kinds, quality), lossless"
	sys := "millstream-historian"
	if numericOnly {
		sys += "/numeric"
		note = "the samples VictoriaMetrics gets (numeric, no null/NaN), with quality, lossless"
	}
	emit(map[string]any{"system": sys, "tags": set.Tags(), "samples": total,
		"seconds": el.Seconds(), "samples_per_s": float64(total) / el.Seconds(),
		"disk_bytes": size, "bytes_per_sample": float64(size) / float64(total), "note": note})
	return nil
}

// numeric returns the value VictoriaMetrics can store.
func numeric(v uns.Value) (float64, bool) {
	switch v.Kind() {
	case uns.Float:
		f, _ := v.Float()
		return f, !math.IsNaN(f) && !math.IsInf(f, 0)
	case uns.Int:
		i, _ := v.Int()
		return float64(i), true
	case uns.Uint:
		u, _ := v.Uint()
		return float64(u), true
	case uns.Bool:
		if b, _ := v.Bool(); b {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func benchVM(set *synth.Set, bin, tmp string, settle time.Duration) error {
	// The import bodies, prepared before the clock starts: one JSON line
	// per tag and hour, batched into requests of about 8 MB.
	bodies := filepath.Join(tmp, "vm-import.jsonl")
	f, err := os.Create(bodies)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var offsets []int64 // request boundaries in the file
	var off int64
	samples := 0
	for i := range set.Tags() {
		g := set.Signal(i)
		name := set.Path(i)
		var ts []int64
		var vs []float64
		flushLine := func() error {
			if len(ts) == 0 {
				return nil
			}
			line, err := json.Marshal(map[string]any{
				"metric":     map[string]string{"__name__": "synth", "path": name},
				"values":     vs,
				"timestamps": ts,
			})
			if err != nil {
				return err
			}
			line = append(line, '\n')
			if _, err := w.Write(line); err != nil {
				return err
			}
			if off/(8<<20) != (off+int64(len(line)))/(8<<20) {
				offsets = append(offsets, off+int64(len(line)))
			}
			off += int64(len(line))
			ts, vs = ts[:0], vs[:0]
			return nil
		}
		for {
			t, v, _, ok := g.Next()
			if !ok {
				break
			}
			if len(ts) > 0 && t/3_600_000 != ts[0]/3_600_000 {
				if err := flushLine(); err != nil {
					return err
				}
			}
			if x, ok := numeric(v); ok {
				ts, vs = append(ts, t), append(vs, x)
				samples++
			}
		}
		if err := flushLine(); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	f.Close()
	if len(offsets) == 0 || offsets[len(offsets)-1] != off {
		offsets = append(offsets, off)
	}

	addr, err := freeAddr()
	if err != nil {
		return err
	}
	data := filepath.Join(tmp, "vm-data")
	cmd := exec.Command(bin, "-storageDataPath="+data, "-httpListenAddr="+addr,
		"-retentionPeriod=100y", "-search.disableCache", "-loggerLevel=ERROR")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}()
	base := "http://" + addr
	up := false
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get(base + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				up = true
				break
			}
		}
	}
	if !up {
		return fmt.Errorf("victoria-metrics did not start on %s", addr)
	}

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(offsets))
	next := make(chan [2]int64)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rf, err := os.Open(bodies)
			if err != nil {
				errs <- err
				return
			}
			defer rf.Close()
			for r := range next {
				resp, err := http.Post(base+"/api/v1/import", "application/json", io.NewSectionReader(rf, r[0], r[1]-r[0]))
				if err != nil {
					errs <- err
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					errs <- fmt.Errorf("import: %s: %s", resp.Status, bytes.TrimSpace(b))
				}
			}
		}()
	}
	prev := int64(0)
	for _, o := range offsets {
		next <- [2]int64{prev, o}
		prev = o
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	resp, err := http.Get(base + "/internal/force_flush")
	if err != nil {
		return err
	}
	resp.Body.Close()
	el := time.Since(start)
	time.Sleep(settle)
	// Check that every sample is there: count them through the query API.
	stored, err := vmCount(base, set)
	if err != nil {
		return err
	}
	size, err := dirSize(data)
	if err != nil {
		return err
	}
	emit(map[string]any{"system": "victoria-metrics", "tags": set.Tags(), "samples": samples,
		"samples_stored": stored, "seconds": el.Seconds(), "samples_per_s": float64(samples) / el.Seconds(),
		"disk_bytes": size, "bytes_per_sample": float64(size) / float64(samples),
		"note": "numeric samples only (no strings, no null/NaN, no quality), /api/v1/import JSON lines, 2 connections, after force_flush + settle"})
	return nil
}

// vmCount asks VictoriaMetrics how many samples it holds.
func vmCount(base string, set *synth.Set) (int64, error) {
	cfg := synth.New(synth.Config{Tags: 1, Seed: 1}).Signal(0)
	t0, _, _, _ := cfg.Next()
	end := t0/1000 + int64(set.Samples()) + 1
	q := fmt.Sprintf("%s/api/v1/query?query=sum(count_over_time(synth[%ds]))&time=%d", base, set.Samples()+10, end)
	resp, err := http.Get(q)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if len(r.Data.Result) == 0 {
		return 0, fmt.Errorf("victoria-metrics holds no samples")
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	return strconv.ParseInt(s, 10, 64)
}
