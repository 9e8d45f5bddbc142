package config

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Day and Week are the units the config adds to Go's duration syntax.
// Retention and session expiry are naturally counted in days, and "168h" is
// how operators mistype a week.
const (
	Day  = 24 * time.Hour
	Week = 7 * Day
)

// durationUnits are the units ParseDuration accepts, in nanoseconds.
var durationUnits = map[string]time.Duration{
	"ns": time.Nanosecond,
	"us": time.Microsecond,
	"µs": time.Microsecond, // U+00B5 micro sign
	"μs": time.Microsecond, // U+03BC Greek mu
	"ms": time.Millisecond,
	"s":  time.Second,
	"m":  time.Minute,
	"h":  time.Hour,
	"d":  Day,
	"w":  Week,
}

const durationHint = "use a unit, e.g. 500ms, 30s, 7d"

// ParseDuration parses a duration as written in the configuration: numbers
// with units ns, us, ms, s, m, h, d (24h) and w (7d), combinable as in "1h30m"
// or "1d12h"; "0"; or "-1", which means unlimited where an option allows it.
//
// A bare number other than 0 and -1 is rejected rather than read as seconds
// or nanoseconds: both readings are common, and guessing wrong turns a 30
// second timeout into 30 nanoseconds.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return 0, errors.New("empty duration; " + durationHint)
	case "0", "+0", "-0":
		return 0, nil
	case "-1":
		return -1, nil
	}
	if _, err := strconv.ParseInt(s, 10, 64); err == nil {
		return 0, fmt.Errorf("%q has no unit; %s (only 0 and -1 need none)", s, durationHint)
	}
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("%q is negative; durations are positive, or -1 for unlimited where the option allows it", s)
	}
	rest := strings.TrimPrefix(s, "+")
	var total time.Duration
	for rest != "" {
		// A component is a decimal number (digits with at most one '.')
		// followed by a unit made of letters.
		i := 0
		dots := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			if rest[i] == '.' {
				dots++
			}
			i++
		}
		num := rest[:i]
		if num == "" || num == "." || dots > 1 {
			return 0, fmt.Errorf("%q is not a duration; write numbers with units (ns, us, ms, s, m, h, d, w), e.g. 250ms, 1h30m, 7d", s)
		}
		rest = rest[i:]
		j := 0
		for j < len(rest) && !(rest[j] >= '0' && rest[j] <= '9' || rest[j] == '.') {
			j++
		}
		unit := rest[:j]
		rest = rest[j:]
		mult, ok := durationUnits[unit]
		if !ok {
			if unit == "" {
				return 0, fmt.Errorf("%q: %s has no unit; %s", s, num, durationHint)
			}
			return 0, fmt.Errorf("%q: unknown unit %q; use ns, us, ms, s, m, h, d or w (lower case; m is minutes)", s, unit)
		}
		v, ok := scaleDecimal(num, int64(mult))
		if !ok || total > math.MaxInt64-time.Duration(v) {
			return 0, fmt.Errorf("%q is too long; the longest duration is about 292 years (use -1 for unlimited where the option allows it)", s)
		}
		total += time.Duration(v)
	}
	return Duration(total), nil
}

// scaleDecimal returns the decimal number num (digits with an optional
// fraction) times mult, truncated to an integer, and whether it fits in an
// int64. big.Rat keeps "1.1d" exact where float64 would not.
func scaleDecimal(num string, mult int64) (int64, bool) {
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, false
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	q := new(big.Int).Quo(r.Num(), r.Denom())
	if !q.IsInt64() {
		return 0, false
	}
	return q.Int64(), true
}

// String returns the duration as the configuration writes it: "0", "-1", or
// components from days down to nanoseconds ("7d", "1h30m", "1s500ms"). Days
// are the largest unit so that defaults read as they are documented ("7d",
// not "1w"). ParseDuration(d.String()) == d for every d >= -1.
func (d Duration) String() string {
	switch {
	case d == 0:
		return "0"
	case d == -1:
		return "-1"
	}
	var b strings.Builder
	// uint64 of the negation is exact even for math.MinInt64.
	u := uint64(d)
	if d < 0 {
		b.WriteByte('-')
		u = uint64(-d)
	}
	for _, c := range []struct {
		unit string
		size time.Duration
	}{
		{"d", Day}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second},
		{"ms", time.Millisecond}, {"us", time.Microsecond}, {"ns", time.Nanosecond},
	} {
		if n := u / uint64(c.size); n > 0 {
			b.WriteString(strconv.FormatUint(n, 10))
			b.WriteString(c.unit)
			u -= n * uint64(c.size)
		}
	}
	return b.String()
}

// MarshalYAML writes the human form ("7d"); 0 and -1 are written as numbers.
func (d Duration) MarshalYAML() (any, error) {
	if d == 0 || d == -1 {
		return int64(d), nil
	}
	return d.String(), nil
}

// UnmarshalYAML reads what ParseDuration accepts. Load does not go through it
// (it needs the key path for its messages); it is here so Duration fields in
// other YAML documents work too.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a duration is a single value such as 30s, not a %s", n.Line, kindName(n))
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = v
	return nil
}

// byteUnits are the units ParseByteSize accepts, lower-cased. Both decimal
// (KB = 1000) and binary (KiB = 1024) units exist because disk vendors and
// operating systems disagree; single letters ("K", "M") are rejected because
// they are ambiguous between the two.
var byteUnits = map[string]int64{
	"":    1,
	"b":   1,
	"kb":  1e3,
	"mb":  1e6,
	"gb":  1e9,
	"tb":  1e12,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
}

const sizeHint = "use bytes (1048576) or a unit, e.g. 512KiB, 128MiB, 1GB"

// ParseByteSize parses a size as written in the configuration: a whole number
// of bytes, or a number with a unit B, KB, MB, GB, TB (powers of 1000) or
// KiB, MiB, GiB, TiB (powers of 1024), case-insensitive, optionally separated
// by a space ("128 MiB"), fractions allowed when they come to whole bytes
// ("1.5KiB"); or "-1", which means unlimited where an option allows it.
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return 0, errors.New("empty size; " + sizeHint)
	case "-1":
		return -1, nil
	}
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("%q is negative; sizes are 0 or more, or -1 for unlimited where the option allows it", s)
	}
	body := strings.TrimPrefix(s, "+")
	i := 0
	for i < len(body) && (body[i] >= '0' && body[i] <= '9' || body[i] == '.') {
		i++
	}
	num, unit := body[:i], strings.TrimSpace(body[i:])
	mult, ok := byteUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit %q; use B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)", s, unit)
	}
	r, ok := new(big.Rat).SetString(num)
	if num == "" || !ok {
		return 0, fmt.Errorf("%q is not a size; %s", s, sizeHint)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("%q is not a whole number of bytes", s)
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("%q is too large; the largest size is 8EiB - 1 (use -1 for unlimited where the option allows it)", s)
	}
	return ByteSize(r.Num().Int64()), nil
}

// sizeForms are the units String may pick, binary first so a tie (1KiB vs
// 1024B) goes to the unit operators see in their tools.
var sizeForms = []struct {
	unit string
	size int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3},
}

// String returns the size as the configuration writes it: "0", "-1", or the
// exact form with the smallest number ("128MiB", "1GB", "1500B").
// ParseByteSize(b.String()) == b for every b >= -1.
func (b ByteSize) String() string {
	if b <= 0 {
		return strconv.FormatInt(int64(b), 10)
	}
	best, bestUnit := int64(b), "B"
	for _, f := range sizeForms {
		if int64(b)%f.size == 0 && int64(b)/f.size < best {
			best, bestUnit = int64(b)/f.size, f.unit
		}
	}
	return strconv.FormatInt(best, 10) + bestUnit
}

// MarshalYAML writes the human form ("128MiB"); 0 and -1 are written as
// numbers.
func (b ByteSize) MarshalYAML() (any, error) {
	if b == 0 || b == -1 {
		return int64(b), nil
	}
	return b.String(), nil
}

// UnmarshalYAML reads what ParseByteSize accepts (see Duration.UnmarshalYAML
// for why Load does not use it).
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a size is a single value such as 128MiB, not a %s", n.Line, kindName(n))
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// kindName names a node's kind for messages.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping (key: value lines)"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	case yaml.DocumentNode:
		return "document"
	}
	return "single value"
}
