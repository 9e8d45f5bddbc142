package broker

import (
	"strings"
	"testing"

	"github.com/millstream/millstream/config"
)

func TestMatchTopic(t *testing.T) {
	cases := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"a/+/c", "a//c", true},
		{"a", "a/b", false},
		{"a/b/c", "a/b", false},
		{"+", "", true},
	}
	for _, c := range cases {
		if got := matchTopic(strings.Split(c.filter, "/"), c.topic); got != c.want {
			t.Errorf("matchTopic(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

func TestFilterRelations(t *testing.T) {
	cases := []struct {
		rule, sub         string
		overlap, contains bool
	}{
		{"plant/#", "plant/+/temp", true, true},
		{"plant/#", "#", true, false},
		{"plant/#", "plant", true, true},
		{"plant/+", "plant/#", true, false},
		{"plant/a", "plant/+", true, false},
		{"plant/+", "plant/a", true, true},
		{"a/b", "c/#", false, false},
		{"#", "$SYS/#", false, false},
		{"$SYS/#", "#", false, false},
		{"+/+", "a/b/c", false, false},
		{"a/+/c", "a/b/+", true, false},
	}
	for _, c := range cases {
		r, s := strings.Split(c.rule, "/"), strings.Split(c.sub, "/")
		if got := filtersOverlap(r, s); got != c.overlap {
			t.Errorf("filtersOverlap(%q, %q) = %v, want %v", c.rule, c.sub, got, c.overlap)
		}
		if got := filterContains(r, s); got != c.contains {
			t.Errorf("filterContains(%q, %q) = %v, want %v", c.rule, c.sub, got, c.contains)
		}
	}
}

func TestACLRules(t *testing.T) {
	a, err := newACL([]config.ACL{
		{User: "*", Action: "all", Deny: []string{"secret/#"}},
		{User: "alice", Action: "publish", Allow: []string{"plant/alice/#"}},
		{User: "alice", Action: "subscribe", Allow: []string{"plant/#"}, Deny: []string{"plant/hr/#"}},
		{User: "*", Action: "subscribe", Allow: []string{"public/#"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	alice, bob := []byte("alice"), []byte("bob")
	pub := []struct {
		user  []byte
		topic string
		want  bool
	}{
		{alice, "plant/alice/temp", true},
		{alice, "plant/bob/temp", false},
		{alice, "secret/x", false},
		{bob, "plant/alice/temp", false},
		{nil, "public/x", false}, // no publish rule for anonymous
	}
	for _, c := range pub {
		if got := a.allowPublish(c.user, c.topic); got != c.want {
			t.Errorf("allowPublish(%s, %q) = %v, want %v", c.user, c.topic, got, c.want)
		}
	}
	sub := []struct {
		user   []byte
		filter string
		want   bool
	}{
		{alice, "plant/#", false}, // overlaps plant/hr/#
		{alice, "plant/line1/#", true},
		{alice, "plant/hr/pay", false},
		{alice, "#", false}, // overlaps secret/#
		{alice, "plant/+/temp", false},
		{alice, "plant/line1/temp", true},
		{bob, "public/#", true},
		{bob, "plant/line1/temp", false},
		{nil, "public/a", true},
		{bob, "$share/g/public/#", true},
		{bob, "$share/g/plant/#", false},
	}
	for _, c := range sub {
		if got := a.allowRead(c.user, c.filter); got != c.want {
			t.Errorf("allowRead(%s, %q) = %v, want %v", c.user, c.filter, got, c.want)
		}
	}

	var none *acl
	if !none.allowPublish(nil, "x") || !none.allowRead(nil, "#") {
		t.Error("no ACL must allow everything")
	}
}

func TestACLConfigErrors(t *testing.T) {
	bad := [][]config.ACL{
		{{User: "", Action: "all", Allow: []string{"#"}}},
		{{User: "a", Action: "write", Allow: []string{"#"}}},
		{{User: "a", Action: "all"}},
		{{User: "a", Action: "all", Allow: []string{"a/#/b"}}},
		{{User: "a", Action: "all", Deny: []string{""}}},
	}
	for i, rules := range bad {
		if _, err := newACL(rules); err == nil {
			t.Errorf("case %d: expected an error", i)
		} else if !strings.Contains(err.Error(), "mqtt.acl[0]") {
			t.Errorf("case %d: error %q does not name the rule", i, err)
		}
	}
}

func TestMatchTopicDoesNotAllocate(t *testing.T) {
	f := strings.Split("plant/+/line/#", "/")
	n := testing.AllocsPerRun(100, func() { matchTopic(f, "plant/a/line/b/c") })
	if n != 0 {
		t.Errorf("matchTopic allocates %v times per call", n)
	}
}
