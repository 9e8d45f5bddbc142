package encoding

import (
	"encoding/binary"
	"slices"
	"sync"
)

// String column layout:
//
//	dictionary size d          uvarint
//	d entries                  uvarint length + bytes, in first-use order
//	runs                       (uvarint index < d, uvarint run length)
//	                           pairs; consecutive runs differ in index
//
// Machine states, modes and recipe names repeat, so a column holds each
// distinct string once and a run per change.

// dictScratch is the encoder's reusable dictionary. Columns of a few
// distinct strings (the usual case) are served by a linear scan; the map is
// only filled when the dictionary grows past smallDict.
type dictScratch struct {
	list []string
	idx  map[string]uint64
}

const smallDict = 16

var dictPool = sync.Pool{New: func() any { return &dictScratch{} }}

func (d *dictScratch) lookup(s string) uint64 {
	if len(d.list) <= smallDict {
		for i, e := range d.list {
			if e == s {
				return uint64(i)
			}
		}
		if len(d.list) < smallDict {
			d.list = append(d.list, s)
			return uint64(len(d.list) - 1)
		}
		if d.idx == nil {
			d.idx = make(map[string]uint64)
		}
		for i, e := range d.list {
			d.idx[e] = uint64(i)
		}
	}
	if i, ok := d.idx[s]; ok {
		return i
	}
	d.list = append(d.list, s)
	d.idx[s] = uint64(len(d.list) - 1)
	return uint64(len(d.list) - 1)
}

// AppendStrings appends a string column.
func AppendStrings(dst []byte, vals []string) []byte {
	d := dictPool.Get().(*dictScratch)
	d.list = d.list[:0]
	clear(d.idx)
	// First pass builds the dictionary, which precedes the runs.
	for i, s := range vals {
		if i > 0 && s == vals[i-1] {
			continue
		}
		d.lookup(s)
	}
	dst = binary.AppendUvarint(dst, uint64(len(d.list)))
	for _, s := range d.list {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	for i := 0; i < len(vals); {
		j := i + 1
		for j < len(vals) && vals[j] == vals[i] {
			j++
		}
		dst = binary.AppendUvarint(dst, d.lookup(vals[i]))
		dst = binary.AppendUvarint(dst, uint64(j-i))
		i = j
	}
	clear(d.list) // drop references to the caller's strings
	d.list = d.list[:0]
	clear(d.idx)
	dictPool.Put(d)
	return dst
}

// DecodeStrings decodes a string column of n values from src, appending
// them to dst. dict is scratch for the dictionary, returned for reuse; each
// distinct string is allocated once, values share it.
func DecodeStrings(dst []string, dict []string, src []byte, n int) ([]string, []string, error) {
	dict = dict[:0]
	if n < 0 {
		return dst, dict, corrupt("negative count %d", n)
	}
	pos := 0
	size, ok := uvarint(src, &pos)
	// Each entry takes at least a length byte.
	if !ok || size > uint64(len(src)-pos) {
		return dst, dict, corrupt("bad dictionary size")
	}
	for range size {
		l, ok := uvarint(src, &pos)
		if !ok || l > uint64(len(src)-pos) {
			return dst, dict, corrupt("bad dictionary entry")
		}
		dict = append(dict, string(src[pos:pos+int(l)]))
		pos += int(l)
	}
	left := uint64(n)
	dst = slices.Grow(dst, n)
	prev := uint64(1<<64 - 1)
	for left > 0 {
		i, ok1 := uvarint(src, &pos)
		run, ok2 := uvarint(src, &pos)
		if !ok1 || !ok2 || i >= size || i == prev || run == 0 || run > left {
			return dst, dict, corrupt("bad string run")
		}
		prev = i
		left -= run
		s := dict[i]
		for ; run > 0; run-- {
			dst = append(dst, s)
		}
	}
	if pos != len(src) {
		return dst, dict, corrupt("%d trailing bytes after string column", len(src)-pos)
	}
	return dst, dict, nil
}
