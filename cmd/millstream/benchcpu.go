package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"strconv"
)

// machineCPU is the whole machine's CPU time, in clock ticks, read from the
// first line of /proc/stat (Linux).
//
// The bench reports how busy the machine was during each phase because the
// load generator runs on the machine under test: when the broker and the
// generator together use nearly every core, tail latency measures queueing
// for a CPU, not the broker. On a virtual machine, steal (time the
// hypervisor gave to other guests) is reported too: it comes and goes with
// the neighbours and makes runs differ.
type machineCPU struct {
	busy  float64 // user, nice, system, irq, softirq
	steal float64
	total float64 // busy, idle, iowait, steal
}

// parseProcStat reads the aggregate "cpu" line of /proc/stat.
func parseProcStat(b []byte) (machineCPU, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return machineCPU{}, fmt.Errorf("/proc/stat: first line %q is not the aggregate cpu line", line)
	}
	var v [8]float64 // user nice system idle iowait irq softirq steal
	for i := range v {
		x, err := strconv.ParseFloat(string(f[i+1]), 64)
		if err != nil {
			return machineCPU{}, fmt.Errorf("/proc/stat: field %d of the cpu line: %w", i+1, err)
		}
		v[i] = x
	}
	busy := v[0] + v[1] + v[2] + v[5] + v[6]
	return machineCPU{busy: busy, steal: v[7], total: busy + v[3] + v[4] + v[7]}, nil
}

// readMachineCPU reads /proc/stat; ok is false where there is none.
func readMachineCPU() (machineCPU, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, false
	}
	m, err := parseProcStat(b)
	return m, err == nil
}

// cpuUsage returns the busy and steal percentages of the machine's CPU time
// between a and b, to a tenth of a percent.
func cpuUsage(a, b machineCPU) (busy, steal float64, ok bool) {
	d := b.total - a.total
	if d <= 0 {
		return 0, 0, false
	}
	return math.Round(1000*(b.busy-a.busy)/d) / 10, math.Round(1000*(b.steal-a.steal)/d) / 10, true
}
