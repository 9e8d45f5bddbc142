package main

import (
	"runtime"
	"strings"
	"testing"
)

func TestParseProcStat(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	a, err := parseProcStat([]byte("cpu  100 0 50 800 10 0 20 20 0 0\ncpu0 50 0 25 400 5 0 10 10 0 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.busy != 170 || a.steal != 20 || a.total != 1000 {
		t.Fatalf("parsed %+v, want busy 170, steal 20, total 1000", a)
	}
	b, err := parseProcStat([]byte("cpu  400 0 150 1100 10 0 70 70 0 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	// Between a and b: busy +450, steal +50, idle +300: 800 ticks.
	busy, steal, ok := cpuUsage(a, b)
	if !ok || busy != 56.3 || steal != 6.3 {
		t.Fatalf("cpuUsage = %v, %v, %v; want 56.3, 6.3, true", busy, steal, ok)
	}
	if _, _, ok := cpuUsage(b, b); ok {
		t.Error("cpuUsage over no time reported ok")
	}
	for _, bad := range []string{"", "intr 1 2 3\n", "cpu 1 2 3\n", "cpu 1 2 x 4 5 6 7 8 9 10\n"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q) did not fail", bad)
		} else if !strings.Contains(err.Error(), "/proc/stat") {
			t.Errorf("parseProcStat(%q): error %q does not name /proc/stat", bad, err)
		}
	}
	if runtime.GOOS == "linux" {
		if _, ok := readMachineCPU(); !ok {
			t.Error("readMachineCPU failed on Linux")
		}
	}
}
