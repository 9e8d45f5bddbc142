package config

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string // substring; "" means success
	}{
		{"0", 0, ""},
		{"-1", -1, ""},
		{" 30s ", 30 * time.Second, ""},
		{"250ms", 250 * time.Millisecond, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"7d", 7 * 24 * time.Hour, ""},
		{"2w", 14 * 24 * time.Hour, ""},
		{"1d12h", 36 * time.Hour, ""},
		{"1w2d3h4m5s6ms7us8ns", 9*24*time.Hour + 3*time.Hour + 4*time.Minute + 5*time.Second + 6*time.Millisecond + 7*time.Microsecond + 8, ""},
		{"1.5h", 90 * time.Minute, ""},
		{"0.5d", 12 * time.Hour, ""},
		{"10µs", 10 * time.Microsecond, ""},
		{"+5s", 5 * time.Second, ""},
		{"0s", 0, ""},
		{"", 0, "empty duration"},
		{"30", 0, `"30" has no unit; use a unit, e.g. 500ms, 30s, 7d`},
		{"-5", 0, "has no unit"},
		{"1.5", 0, "has no unit"},
		{"5x", 0, `unknown unit "x"`},
		{"5H", 0, `unknown unit "H"`},
		{"5 s", 0, `unknown unit " s"`},
		{"1h30", 0, "30 has no unit"},
		{"-5s", 0, "is negative"},
		{"-1s", 0, "is negative"},
		{"h", 0, "is not a duration"},
		{"1..5s", 0, "is not a duration"},
		{"300000w", 0, "too long"},
		{"99999999999999999999ns", 0, "too long"},
		{"292y", 0, `unknown unit "y"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDuration(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseDuration(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || time.Duration(got) != tt.want {
				t.Fatalf("ParseDuration(%q) = %v, %v; want %v", tt.in, time.Duration(got), err, tt.want)
			}
		})
	}
}

func TestDurationString(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0"},
		{-1, "-1"},
		{1, "1ns"},
		{time.Millisecond, "1ms"},
		{1500 * time.Millisecond, "1s500ms"},
		{90 * time.Minute, "1h30m"},
		{24 * time.Hour, "1d"},
		{7 * 24 * time.Hour, "7d"},
		{14 * 24 * time.Hour, "14d"},
		{36 * time.Hour, "1d12h"},
		{-time.Hour, "-1h"},
		{math.MaxInt64, "106751d23h47m16s854ms775us807ns"},
	}
	for _, tt := range tests {
		if got := Duration(tt.in).String(); got != tt.want {
			t.Errorf("Duration(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
	}
}

// Every duration the configuration can hold prints as text that parses back
// to it.
func TestDurationRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	values := []Duration{0, -1, 1, math.MaxInt64, Duration(Week), Duration(Day + time.Nanosecond)}
	for range 10000 {
		values = append(values, Duration(r.Int64N(math.MaxInt64)), Duration(r.Int64N(int64(30*Day))))
	}
	for _, d := range values {
		got, err := ParseDuration(d.String())
		if err != nil || got != d {
			t.Fatalf("ParseDuration(%q) = %d, %v; want %d", d.String(), got, err, d)
		}
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"0", 0, ""},
		{"-1", -1, ""},
		{"1048576", 1 << 20, ""},
		{"512KiB", 512 << 10, ""},
		{"128MiB", 128 << 20, ""},
		{"128 MiB", 128 << 20, ""},
		{"1GiB", 1 << 30, ""},
		{"2TiB", 2 << 40, ""},
		{"1KB", 1000, ""},
		{"1MB", 1e6, ""},
		{"1GB", 1e9, ""},
		{"1TB", 1e12, ""},
		{"1tib", 1 << 40, ""},
		{"4mb", 4e6, ""},
		{"1kib", 1024, ""},
		{"100B", 100, ""},
		{"100b", 100, ""},
		{"1.5KiB", 1536, ""},
		{"", 0, "empty size"},
		{"-2", 0, "is negative"},
		{"-1KiB", 0, "is negative"},
		{"1K", 0, `unknown unit "K"`},
		{"1M", 0, `unknown unit "M"`},
		{"1PiB", 0, `unknown unit "PiB"`},
		{"KiB", 0, "is not a size"},
		{"1.2.3MiB", 0, "is not a size"},
		{"0.1B", 0, "not a whole number of bytes"},
		{"9999999TiB", 0, "too large"},
		{"99999999999999999999", 0, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseByteSize(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseByteSize(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || int64(got) != tt.want {
				t.Fatalf("ParseByteSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestByteSizeString(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"},
		{-1, "-1"},
		{1, "1B"},
		{1500, "1500B"},
		{1000, "1KB"},
		{1024, "1KiB"},
		{4 << 20, "4MiB"},
		{128 << 20, "128MiB"},
		{1e9, "1GB"},
		{1 << 40, "1TiB"},
		{1024000000, "1024MB"}, // fewer digits than 1000000KiB
		{4096000, "4000KiB"},   // a tie in digits goes to the binary unit
	}
	for _, tt := range tests {
		if got := ByteSize(tt.in).String(); got != tt.want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestByteSizeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	values := []ByteSize{0, -1, 1, math.MaxInt64, 1 << 62, 1e18}
	for range 10000 {
		values = append(values, ByteSize(r.Int64N(math.MaxInt64)), ByteSize(r.Int64N(1<<40)), ByteSize(r.Int64N(1<<20)<<10))
	}
	for _, b := range values {
		got, err := ParseByteSize(b.String())
		if err != nil || got != b {
			t.Fatalf("ParseByteSize(%q) = %d, %v; want %d", b.String(), got, err, b)
		}
	}
}

// Duration and ByteSize work in any YAML document, not only through Load.
func TestUnitsYAML(t *testing.T) {
	type doc struct {
		D Duration `yaml:"d"`
		B ByteSize `yaml:"b"`
		U Duration `yaml:"u"`
		N ByteSize `yaml:"z"`
	}
	in := doc{D: Duration(7 * Day), B: 128 << 20, U: -1, N: 0}
	out, err := yaml.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := "d: 7d\nb: 128MiB\nu: -1\nz: 0\n"; string(out) != want {
		t.Fatalf("Marshal = %q, want %q", out, want)
	}
	var back doc
	if err := yaml.Unmarshal(out, &back); err != nil || back != in {
		t.Fatalf("Unmarshal(%q) = %+v, %v; want %+v", out, back, err, in)
	}
	for _, bad := range []struct{ in, want string }{
		{"d: 30", `line 1: "30" has no unit`},
		{"b: [1]", "line 1: a size is a single value"},
		{"\nd: {a: 1}", "line 2: a duration is a single value"},
		{"b: 1K", `unknown unit "K"`},
	} {
		err := yaml.Unmarshal([]byte(bad.in), &back)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Unmarshal(%q) = %v, want error containing %q", bad.in, err, bad.want)
		}
	}
}
