package uns

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
)

// Live fans new points out to subscribers by path pattern (MQTT-style:
// "+" matches one segment, a final "#" any number, including none). It
// never blocks the normaliser: a subscriber that falls more than its buffer
// behind is dropped (its channel closed after Overflowed is set), and should
// resubscribe and re-read what it missed from uns.points.
type Live struct {
	mu   sync.RWMutex
	subs map[*Subscription]struct{}
}

// Subscription receives the points matching its pattern on C.
type Subscription struct {
	C       <-chan Point
	c       chan Point
	pattern []string
	live    *Live
	over    atomic.Bool
	once    sync.Once
}

// NewLive returns a fan-out with no subscribers.
func NewLive() *Live { return &Live{subs: map[*Subscription]struct{}{}} }

// ValidatePattern checks a subscription pattern.
func ValidatePattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty pattern (use # for everything)")
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		switch {
		case s == "#" && i != len(segs)-1:
			return fmt.Errorf("pattern %q: # must be the last segment", p)
		case s != "#" && s != "+" && strings.ContainsAny(s, "+#"):
			return fmt.Errorf("pattern %q: + and # must be whole segments", p)
		case s == "":
			return fmt.Errorf("pattern %q has an empty segment", p)
		}
	}
	return nil
}

// Subscribe registers a subscriber with room for buffer points.
func (l *Live) Subscribe(pattern string, buffer int) (*Subscription, error) {
	if err := ValidatePattern(pattern); err != nil {
		return nil, err
	}
	c := make(chan Point, max(buffer, 1))
	s := &Subscription{C: c, c: c, pattern: strings.Split(pattern, "/"), live: l}
	l.mu.Lock()
	l.subs[s] = struct{}{}
	l.mu.Unlock()
	return s, nil
}

// Overflowed reports whether the subscription was dropped for falling behind.
func (s *Subscription) Overflowed() bool { return s.over.Load() }

// Close unsubscribes; C is closed.
func (s *Subscription) Close() {
	s.once.Do(func() {
		s.live.mu.Lock()
		delete(s.live.subs, s)
		s.live.mu.Unlock()
		close(s.c)
	})
}

// Subscribers is the number of subscriptions.
func (l *Live) Subscribers() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.subs)
}

// Publish offers points to every matching subscriber without blocking.
func (l *Live) Publish(points []Point) {
	l.mu.RLock()
	var dropped []*Subscription
	for s := range l.subs {
		for i := range points {
			if !matchPattern(s.pattern, points[i].Path) {
				continue
			}
			select {
			case s.c <- points[i]:
			default:
				s.over.Store(true)
				dropped = append(dropped, s)
			}
			if s.over.Load() {
				break
			}
		}
	}
	l.mu.RUnlock()
	for _, s := range dropped {
		s.Close()
	}
}

// matchPattern matches a path against split pattern segments.
func matchPattern(pat []string, path string) bool {
	for i, p := range pat {
		if p == "#" {
			return true
		}
		if path == "" && i > 0 {
			return false
		}
		seg := path
		rest := ""
		if j := strings.IndexByte(path, '/'); j >= 0 {
			seg, rest = path[:j], path[j+1:]
		} else {
			path = ""
			if p != "+" && p != seg {
				return false
			}
			return i == len(pat)-1 || (i == len(pat)-2 && pat[i+1] == "#")
		}
		if p != "+" && p != seg {
			return false
		}
		path = rest
	}
	return false
}

// MatchPattern reports whether path matches pattern, with the wildcards of
// Subscribe ("+" one segment, a final "#" any number, including none).
// Check the pattern with ValidatePattern first.
func MatchPattern(pattern, path string) bool {
	return matchPattern(strings.Split(pattern, "/"), path)
}
