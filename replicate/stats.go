package replicate

import (
	"context"
	"time"

	mlog "github.com/millstream/millstream/log"
)

// flowStats is one computation of a flow's backlog.
type flowStats struct {
	records int64
	bytes   int64
	// oldest is the age of the oldest unreplicated record; 0 when caught up.
	oldest time.Duration
	// ratio is how close the backlog is to local retention (1 = being
	// deleted).
	ratio float64
}

func (f *flow) statsLoop(ctx context.Context) {
	t := time.NewTicker(f.r.opts.StatsInterval)
	defer t.Stop()
	for {
		if st, err := f.stats(ctx); err == nil {
			f.report(st)
		} else if ctx.Err() == nil {
			f.log.Debug("backlog not computed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// stats computes the backlog from the committed checkpoint: it lags the
// replication by at most CommitInterval, and it is right while no session
// runs (WAN down at start), which is when it matters most.
func (f *flow) stats(ctx context.Context) (flowStats, error) {
	var st flowStats
	l := f.r.l
	now := f.r.opts.Now()
	for _, t := range f.cfg.Topics {
		info, err := l.Topic(ctx, t)
		if err != nil {
			return st, err
		}
		for _, p := range info.Partitions {
			off, ok, err := l.CommittedOffset(ctx, f.group, t, p.Partition)
			if err != nil {
				return st, err
			}
			if !ok {
				off = p.Start
				if f.cfg.StartAtLatest {
					off = p.End
				}
			}
			off = max(off, p.Start)
			n := p.End - off
			if n <= 0 {
				continue
			}
			st.records += n
			var bytes int64
			if total := p.End - p.Start; total > 0 && p.Bytes > 0 {
				bytes = int64(float64(p.Bytes) * float64(n) / float64(total))
				st.bytes += bytes
			}
			recs, err := l.Fetch(ctx, t, p.Partition, off, mlog.FetchOptions{MaxRecords: 1, MaxBytes: 1})
			if err != nil || len(recs) == 0 {
				continue
			}
			age := max(now.Sub(recs[0].Timestamp), 0)
			st.oldest = max(st.oldest, age)
			if ra := info.Config.RetentionAge; ra > 0 {
				st.ratio = max(st.ratio, age.Seconds()/ra.Seconds())
			}
			if rb := info.Config.RetentionBytes; rb > 0 && bytes > 0 {
				st.ratio = max(st.ratio, float64(bytes)/float64(rb))
			}
		}
	}
	return st, nil
}

func (f *flow) report(st flowStats) {
	m, name := f.r.m, f.cfg.Name
	m.backlogRecords.WithLabelValues(name).Set(float64(st.records))
	m.backlogBytes.WithLabelValues(name).Set(float64(st.bytes))
	m.lagSeconds.WithLabelValues(name).Set(st.oldest.Seconds())
	m.retentionRatio.WithLabelValues(name).Set(st.ratio)
	switch {
	case st.ratio >= f.r.opts.BacklogAlertRatio:
		// Logged every time while above the threshold: it is the last
		// warning before unreplicated data is deleted.
		f.log.Warn("replication backlog is close to local retention: unreplicated data will be deleted unless the WAN comes back or retention is raised",
			"backlog_records", st.records, "oldest_age", st.oldest.Round(time.Second), "retention_ratio", st.ratio)
		f.alerted = true
	case f.alerted:
		f.log.Info("replication backlog back below the retention alert threshold", "retention_ratio", st.ratio)
		f.alerted = false
	}
}

// Backlog is a flow's backlog, for the API and tests.
type Backlog struct {
	Flow           string
	Records, Bytes int64
	Lag            time.Duration
	RetentionRatio float64
}

// Backlog computes every flow's backlog now.
func (r *Replicator) Backlog(ctx context.Context) ([]Backlog, error) {
	var out []Backlog
	for _, f := range r.flows {
		st, err := f.stats(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, Backlog{Flow: f.cfg.Name, Records: st.records, Bytes: st.bytes, Lag: st.oldest, RetentionRatio: st.ratio})
	}
	return out, nil
}
