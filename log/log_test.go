package log

import "testing"

// Vectors from Kafka's own murmur2 tests (clients UtilsTest), so a key maps to
// the same partition here and on a Kafka cluster.
func TestMurmur2MatchesKafka(t *testing.T) {
	cases := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	for in, want := range cases {
		if got := int32(murmur2([]byte(in))); got != want {
			t.Errorf("murmur2(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestPartitionForKey(t *testing.T) {
	if p := PartitionForKey(nil, 8); p != 0 {
		t.Fatalf("nil key -> %d", p)
	}
	for _, k := range []string{"a", "plant/line1/press", "x"} {
		p := PartitionForKey([]byte(k), 7)
		if p < 0 || p >= 7 {
			t.Fatalf("key %q -> %d out of range", k, p)
		}
		if p2 := PartitionForKey([]byte(k), 7); p2 != p {
			t.Fatalf("not deterministic")
		}
	}
}

func TestValidateTopicName(t *testing.T) {
	for _, ok := range []string{"mqtt.ingress", "uns.points", "a-b_c.9"} {
		if err := ValidateTopicName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a b", string(make([]byte, 250))} {
		if err := ValidateTopicName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
