package sparkplug

import (
	"errors"
	"strings"
	"testing"
)

func TestParseTopic(t *testing.T) {
	tests := []struct {
		in      string
		want    Topic
		wantErr string // substring of the error; "" means success
	}{
		{in: "spBv1.0/G1/NBIRTH/E1", want: Topic{Type: NBIRTH, Group: "G1", EdgeNode: "E1"}},
		{in: "spBv1.0/G1/NDEATH/E1", want: Topic{Type: NDEATH, Group: "G1", EdgeNode: "E1"}},
		{in: "spBv1.0/G1/NDATA/E1", want: Topic{Type: NDATA, Group: "G1", EdgeNode: "E1"}},
		{in: "spBv1.0/G1/NCMD/E1", want: Topic{Type: NCMD, Group: "G1", EdgeNode: "E1"}},
		{in: "spBv1.0/G1/DBIRTH/E1/D1", want: Topic{Type: DBIRTH, Group: "G1", EdgeNode: "E1", Device: "D1"}},
		{in: "spBv1.0/G1/DDEATH/E1/D1", want: Topic{Type: DDEATH, Group: "G1", EdgeNode: "E1", Device: "D1"}},
		{in: "spBv1.0/G1/DDATA/E1/D1", want: Topic{Type: DDATA, Group: "G1", EdgeNode: "E1", Device: "D1"}},
		{in: "spBv1.0/G1/DCMD/E1/D1", want: Topic{Type: DCMD, Group: "G1", EdgeNode: "E1", Device: "D1"}},
		{in: "spBv1.0/Plant 1/DDATA/line-3.edge/Press ä", want: Topic{Type: DDATA, Group: "Plant 1", EdgeNode: "line-3.edge", Device: "Press ä"}},
		{in: "spBv1.0/STATE/scada-1", want: Topic{Type: STATE, HostID: "scada-1"}},

		{in: "", wantErr: `namespace is ""`},
		{in: "spBv1.0", wantErr: "has 1 levels"},
		{in: "spAv1.0/G/NDATA/E", wantErr: `namespace is "spAv1.0"`},
		{in: "spBv1.0/G/NDATA", wantErr: "has 3 levels, want 4 or 5"},
		{in: "spBv1.0/G/NDATA/E/D", wantErr: "NDATA topic has 5 levels, want 4"},
		{in: "spBv1.0/G/DDATA/E", wantErr: "DDATA topic has 4 levels, want 5"},
		{in: "spBv1.0/G/DDATA/E/D/x", wantErr: "DDATA topic has 6 levels, want 5"},
		{in: "spBv1.0/G/ndata/E", wantErr: `unknown message type "ndata"`},
		{in: "spBv1.0/G/STATE/E", wantErr: `unknown message type "STATE"`},
		{in: "spBv1.0//NDATA/E", wantErr: "group_id is empty"},
		{in: "spBv1.0/G/NDATA/", wantErr: "edge_node_id is empty"},
		{in: "spBv1.0/G/DDATA/E/", wantErr: "device_id is empty"},
		{in: "spBv1.0/+/NDATA/E", wantErr: "group_id \"+\" contains an MQTT wildcard"},
		{in: "spBv1.0/G/NDATA/#", wantErr: "edge_node_id \"#\" contains an MQTT wildcard"},
		{in: "spBv1.0/G/DDATA/E/a+b", wantErr: "device_id \"a+b\" contains an MQTT wildcard"},
		{in: "spBv1.0/STATE", wantErr: "has 2 levels"},
		{in: "spBv1.0/STATE/", wantErr: "host_id is empty"},
		{in: "spBv1.0/STATE/h/x", wantErr: "STATE topic has 4 levels, want 3"},
		{in: "STATE/h", wantErr: `namespace is "STATE"`},
	}
	for _, tc := range tests {
		got, err := ParseTopic(tc.in)
		if tc.wantErr != "" {
			var te *TopicError
			if !errors.As(err, &te) {
				t.Errorf("ParseTopic(%q) = %+v, %v; want a *TopicError", tc.in, got, err)
				continue
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseTopic(%q) error %q, want it to contain %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTopic(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseTopic(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		if s := got.String(); s != tc.in {
			t.Errorf("ParseTopic(%q).String() = %q", tc.in, s)
		}
	}
}

func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{"spBv1.0/G/NBIRTH/E", "spBv1.0/G/DDATA/E/D", "spBv1.0/STATE/h", "spBv1.0//", "a/b/c/d/e/f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := ParseTopic(s)
		if err != nil {
			return
		}
		if got := tp.String(); got != s {
			t.Fatalf("ParseTopic(%q).String() = %q", s, got)
		}
	})
}
