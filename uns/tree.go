package uns

import (
	"slices"
	"strings"
	"sync"
)

// Tree is the live namespace: the latest point of every path, browsable level
// by level. It is derived state, filled by the normaliser as points are
// written (and, at start, from the recent part of uns.points).
type Tree struct {
	mu   sync.RWMutex
	root treeNode
	n    int
}

type treeNode struct {
	children map[string]*treeNode
	point    *Point
}

// NewTree returns an empty tree.
func NewTree() *Tree { return &Tree{} }

// Update records p as the latest value of its path unless the tree already
// holds a newer one: a late or replayed point must not hide the live value.
func (t *Tree) Update(p Point) {
	t.mu.Lock()
	defer t.mu.Unlock()
	nd := &t.root
	for seg := range strings.SplitSeq(p.Path, "/") {
		if nd.children == nil {
			nd.children = map[string]*treeNode{}
		}
		c := nd.children[seg]
		if c == nil {
			c = &treeNode{}
			nd.children[seg] = c
		}
		nd = c
	}
	switch {
	case nd.point == nil:
		t.n++
		np := p // only a new path's point goes to the heap
		nd.point = &np
	case !nd.point.Time.After(p.Time):
		// In place: readers copy the point under the lock, and a new one
		// per update was a twentieth of a busy server's garbage.
		*nd.point = p
	}
}

// Len is the number of paths with a value.
func (t *Tree) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.n
}

// Child is one entry below a browsed path.
type Child struct {
	Name        string
	Path        string
	HasChildren bool
	Point       *Point // latest value, nil for pure folders
}

// View is a browsed path: its own latest point (if it is a tag) and its
// children in name order.
type View struct {
	Path     string
	Point    *Point
	Children []Child
}

// Browse returns the view of path ("" is the root) and false if nothing is
// known under it. Points are copies: the caller may keep them.
func (t *Tree) Browse(path string) (View, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	nd := &t.root
	if path != "" {
		for seg := range strings.SplitSeq(path, "/") {
			nd = nd.children[seg]
			if nd == nil {
				return View{}, false
			}
		}
	}
	v := View{Path: path}
	if nd.point != nil {
		p := *nd.point
		v.Point = &p
	}
	for name, c := range nd.children {
		ch := Child{Name: name, Path: name, HasChildren: len(c.children) > 0}
		if path != "" {
			ch.Path = path + "/" + name
		}
		if c.point != nil {
			p := *c.point
			ch.Point = &p
		}
		v.Children = append(v.Children, ch)
	}
	slices.SortFunc(v.Children, func(a, b Child) int { return strings.Compare(a.Name, b.Name) })
	return v, true
}
