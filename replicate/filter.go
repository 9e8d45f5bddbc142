package replicate

import (
	"strings"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/uns"
)

// pattern is a validated UNS pattern split into segments: "+" matches one
// segment, a final "#" any number of segments, including none.
type pattern []string

func compilePatterns(ps []string) []pattern {
	out := make([]pattern, 0, len(ps))
	for _, p := range ps {
		out = append(out, strings.Split(p, "/"))
	}
	return out
}

func (p pattern) match(path string) bool {
	segs := strings.Split(path, "/")
	for i, s := range p {
		if s == "#" {
			return true
		}
		if i >= len(segs) || (s != "+" && s != segs[i]) {
			return false
		}
	}
	return len(segs) == len(p)
}

func matchAny(ps []pattern, path string) bool {
	for _, p := range ps {
		if p.match(path) {
			return true
		}
	}
	return false
}

// filter decides which records of a flow leave the site.
type filter struct {
	include, deny []pattern
}

func newFilter(f *Flow) *filter {
	return &filter{include: compilePatterns(f.Include), deny: compilePatterns(f.Deny)}
}

// verdict of a filter.
const (
	selected = iota
	excluded // not matched by Include
	denied   // matched by Deny (or unreadable while rules exist)
)

// decide returns selected, excluded or denied for r. Deny is checked last
// and wins over everything else: data sovereignty rules must hold whatever
// the include patterns say.
func (f *filter) decide(r *mlog.Record) int {
	if len(f.include) == 0 && len(f.deny) == 0 {
		return selected
	}
	key := string(r.Key)
	subjects := []string{key}
	if r.Topic == uns.PointsTopic {
		p, err := uns.ParsePointRecord(r)
		if err != nil {
			// What we cannot read we cannot prove is allowed to leave.
			return denied
		}
		subjects = []string{p.Path, key}
	}
	verdict := selected
	if len(f.include) > 0 && !matchAny(f.include, subjects[0]) {
		verdict = excluded
	}
	for _, s := range subjects {
		if matchAny(f.deny, s) {
			return denied
		}
	}
	return verdict
}
