package chain

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Reasons in Problem.Reason.
const (
	ReasonRowChanged  = "row changed"
	ReasonRowMissing  = "row missing"
	ReasonRowAdded    = "row added"
	ReasonLinkMissing = "link missing"
	ReasonChainBroken = "chain broken"
)

// Problem is one place where the store does not match its chain.
type Problem struct {
	Seq    int64  // the link concerned; 0 for rows that name no known link
	Kind   string // that link's kind ("" when Seq is 0)
	Batch  int64  // chain_batch concerned, if any
	MinTS  time.Time
	MaxTS  time.Time
	Reason string // one of the Reason constants
	Detail string // human-readable specifics (an event id, a count)
}

func (p Problem) String() string {
	s := fmt.Sprintf("%s: ", p.Reason)
	if p.Seq > 0 {
		s += fmt.Sprintf("link %d (%s) ", p.Seq, p.Kind)
	} else if p.Batch != 0 {
		s += fmt.Sprintf("batch %d ", p.Batch)
	}
	s += fmt.Sprintf("time %s .. %s", p.MinTS.Format(time.RFC3339Nano), p.MaxTS.Format(time.RFC3339Nano))
	if p.Detail != "" {
		s += ": " + p.Detail
	}
	return s
}

// Report is Verify's result.
type Report struct {
	Links      int64 // links whose continuity was checked (the whole chain)
	Checked    int64 // batch links whose rows were recomputed (those in the window)
	Rows       int64 // rows read
	Unchained  int64 // rows stored before chaining began (chain_batch 0, not tampering)
	Deleted    int64 // batch links whose rows retention deleted
	Erasures   int   // erasure links
	Retentions int   // retention links
	Head       *Link // the last link (record its Seq and Hash elsewhere: see the package doc)
	OK         bool
	FirstBad   *Problem  // the earliest problem by time, then seq
	Problems   []Problem // up to MaxProblems, earliest first
	Total      int       // problems found in all
}

// MaxProblems bounds Report.Problems.
const MaxProblems = 100

// ErasureDetails is an erasure link's Details.
type ErasureDetails struct {
	Consumer string    `json:"consumer"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Count    int64     `json:"count"`
	EventIDs []string  `json:"event_ids"` // sorted
}

// RetentionDetails is a retention link's Details.
type RetentionDetails struct {
	// BodiesBefore: request_body and response_body of rows with ts before
	// it were cleared (BodiesCleared rows).
	BodiesBefore  *time.Time `json:"bodies_before,omitempty"`
	BodiesCleared int64      `json:"bodies_cleared"`
	// RowsBefore: the rows of every earlier batch link whose max_ts is
	// before it were deleted (RowsDeleted rows, Batches links), and
	// unchained rows older than it.
	RowsBefore  *time.Time `json:"rows_before,omitempty"`
	RowsDeleted int64      `json:"rows_deleted"`
	Batches     int64      `json:"batches"`
}

type linkState struct {
	Link
	ds       []IDDigest
	badRow   string // first row whose content does not match its hashes
	badRowTS int64
}

type retention struct {
	seq          int64
	rowsBefore   int64 // microseconds; math.MinInt64 if none
	bodiesBefore int64
}

// Verify recomputes the chain of the store at dsn and reports the first
// place where rows were changed, added or removed outside llmtap. from and
// to bound the batches whose rows are recomputed (links whose time range
// overlaps [from, to]; zero values mean unbounded); the continuity of the
// whole chain is always checked. Verify reads every row in the window once
// and holds 48 bytes per row of the window plus the links; see the package
// documentation.
//
// anchors are links recorded outside the store earlier (Report.Head of a
// previous run): each must still be in the chain with the same hash.
func Verify(ctx context.Context, dsn string, from, to time.Time, anchors ...Anchor) (*Report, error) {
	d, err := open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer d.close()
	return verify(ctx, d, from, to, anchors)
}

// Anchor is a link's seq and hash kept outside the store.
type Anchor struct {
	Seq  int64
	Hash string
}

func verify(ctx context.Context, d db, from, to time.Time, anchors []Anchor) (*Report, error) {
	all := from.IsZero() && to.IsZero()
	fromUS, toUS := int64(math.MinInt64), int64(math.MaxInt64)
	if !from.IsZero() {
		fromUS = from.UnixMicro()
	}
	if !to.IsZero() {
		toUS = to.UnixMicro()
	}
	rep := &Report{}
	var problems []Problem
	add := func(p Problem) { problems = append(problems, p) }

	// Pass 1: the links, in seq order.
	var (
		prev       *Link
		selected   = map[int64]*linkState{} // batch id -> link in the window
		order      []*linkState
		batchSeq   = map[int64]int64{} // every batch id -> seq
		erased     = map[[16]byte]bool{}
		retentions []retention
		qFrom      = fromUS
		qTo        = toUS
	)
	err := d.links(ctx, func(l *Link) error {
		rep.Links++
		lc := *l
		switch {
		case prev == nil && lc.Seq != 1:
			add(linkProblem(&lc, ReasonChainBroken, fmt.Sprintf("chain starts at seq %d, links 1..%d missing", lc.Seq, lc.Seq-1)))
		case prev != nil && lc.Seq == prev.Seq:
			add(linkProblem(&lc, ReasonChainBroken, fmt.Sprintf("two links with seq %d (two writers, or a copied link)", lc.Seq)))
		case prev != nil && lc.Seq != prev.Seq+1:
			add(linkProblem(&lc, ReasonChainBroken, fmt.Sprintf("links %d..%d missing", prev.Seq+1, lc.Seq-1)))
		case prev == nil && lc.PrevHash != "":
			add(linkProblem(&lc, ReasonChainBroken, "first link has a previous hash"))
		case prev != nil && lc.PrevHash != prev.Hash:
			add(linkProblem(&lc, ReasonChainBroken, fmt.Sprintf("prev_hash does not match link %d's hash", prev.Seq)))
		}
		prev = &lc
		for _, a := range anchors {
			if a.Seq == lc.Seq && a.Hash != lc.Hash {
				add(linkProblem(&lc, ReasonChainBroken, "hash differs from the anchor "+a.Hash+" recorded outside the store (the chain was rewritten)"))
			}
		}
		switch lc.Kind {
		case KindBatch:
			batchSeq[lc.Batch] = lc.Seq
			lmin, lmax := lc.MinTS.UnixMicro(), lc.MaxTS.UnixMicro()
			if all || (lmax >= fromUS && lmin <= toUS) {
				if _, dup := selected[lc.Batch]; dup {
					add(linkProblem(&lc, ReasonChainBroken, fmt.Sprintf("batch %d has two links", lc.Batch)))
					return nil
				}
				st := &linkState{Link: lc}
				selected[lc.Batch] = st
				order = append(order, st)
				qFrom, qTo = min(qFrom, lmin), max(qTo, lmax)
			}
		case KindErasure, KindRetention:
			if lc.ComputeHash([32]byte{}) != lc.Hash {
				add(linkProblem(&lc, ReasonChainBroken, "link hash does not match its fields"))
				return nil
			}
			if lc.Kind == KindErasure {
				rep.Erasures++
				var ed ErasureDetails
				if err := json.Unmarshal([]byte(lc.Details), &ed); err != nil {
					add(linkProblem(&lc, ReasonChainBroken, "unreadable erasure details: "+err.Error()))
					return nil
				}
				for _, s := range ed.EventIDs {
					if u, err := uuid.Parse(s); err == nil {
						erased[[16]byte(u)] = true
					}
				}
			} else {
				rep.Retentions++
				var rd RetentionDetails
				if err := json.Unmarshal([]byte(lc.Details), &rd); err != nil {
					add(linkProblem(&lc, ReasonChainBroken, "unreadable retention details: "+err.Error()))
					return nil
				}
				r := retention{seq: lc.Seq, rowsBefore: math.MinInt64, bodiesBefore: math.MinInt64}
				if rd.RowsBefore != nil {
					r.rowsBefore = rd.RowsBefore.UnixMicro()
				}
				if rd.BodiesBefore != nil {
					r.bodiesBefore = rd.BodiesBefore.UnixMicro()
				}
				retentions = append(retentions, r)
			}
		default:
			add(linkProblem(&lc, ReasonChainBroken, fmt.Sprintf("unknown link kind %q", lc.Kind)))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if prev != nil {
		h := *prev
		rep.Head = &h
	}
	for _, a := range anchors {
		if prev == nil || a.Seq > prev.Seq {
			add(Problem{Seq: a.Seq, Reason: ReasonChainBroken, Detail: fmt.Sprintf("anchored link %d is no longer in the chain (links were removed)", a.Seq)})
		}
	}
	bodiesBefore := int64(math.MinInt64)
	for _, r := range retentions {
		bodiesBefore = max(bodiesBefore, r.bodiesBefore)
	}
	legacyRows, legacyMax, err := d.start(ctx)
	if err != nil {
		return nil, err
	}

	// Pass 2: the rows of the window.
	type orphan struct {
		n        int64
		min, max int64
	}
	orphans := map[int64]*orphan{}
	err = d.rows(ctx, qFrom, qTo, all, func(r *Row, c *Content) error {
		rep.Rows++
		inWindow := r.TSMicro >= fromUS && r.TSMicro <= toUS
		if st := selected[r.Batch]; st != nil && r.Batch != 0 {
			st.ds = append(st.ds, IDDigest{ID: r.EventID, Digest: r.Digest()})
			if st.badRow == "" {
				if why := contentProblem(r, c, erased[r.EventID], bodiesBefore); why != "" {
					st.badRow = uuid.UUID(r.EventID).String() + ": " + why
					st.badRowTS = r.TSMicro
				}
			}
			return nil
		}
		if !inWindow {
			return nil
		}
		if r.Batch == 0 {
			if legacyRows > 0 && r.TSMicro <= legacyMax {
				rep.Unchained++
				return nil
			}
			t := time.UnixMicro(r.TSMicro).UTC()
			add(Problem{MinTS: t, MaxTS: t, Reason: ReasonRowAdded,
				Detail: "row " + uuid.UUID(r.EventID).String() + " belongs to no batch (chain_batch 0, dated after chaining began)"})
			return nil
		}
		if seq, ok := batchSeq[r.Batch]; ok {
			t := time.UnixMicro(r.TSMicro).UTC()
			add(Problem{Seq: seq, Kind: KindBatch, Batch: r.Batch, MinTS: t, MaxTS: t, Reason: ReasonRowAdded,
				Detail: "row " + uuid.UUID(r.EventID).String() + " claims a link whose time range does not hold it"})
			return nil
		}
		o := orphans[r.Batch]
		if o == nil {
			o = &orphan{min: r.TSMicro, max: r.TSMicro}
			orphans[r.Batch] = o
		}
		o.n++
		o.min, o.max = min(o.min, r.TSMicro), max(o.max, r.TSMicro)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for b, o := range orphans {
		add(Problem{Batch: b, MinTS: time.UnixMicro(o.min).UTC(), MaxTS: time.UnixMicro(o.max).UTC(), Reason: ReasonLinkMissing,
			Detail: fmt.Sprintf("%d rows of batch %d without a link (crash between rows and link, or tampering)", o.n, b)})
	}
	if all && rep.Unchained > legacyRows {
		add(Problem{Reason: ReasonRowAdded, MaxTS: time.UnixMicro(legacyMax).UTC(),
			Detail: fmt.Sprintf("%d unchained rows, but only %d were stored before chaining began", rep.Unchained, legacyRows)})
	}

	// Pass 3: recompute each batch link of the window.
	for _, st := range order {
		rep.Checked++
		if len(st.ds) == 0 && deletedByRetention(&st.Link, retentions) {
			rep.Deleted++
			continue
		}
		found := int64(len(st.ds))
		if got := st.ComputeHash(RowsDigest(st.ds)); got != st.Hash {
			reason := ReasonRowChanged
			detail := "rows differ from what was written"
			switch {
			case found < st.Rows:
				reason, detail = ReasonRowMissing, fmt.Sprintf("%d of %d rows found", found, st.Rows)
			case found > st.Rows:
				reason, detail = ReasonRowAdded, fmt.Sprintf("%d rows found, %d written", found, st.Rows)
			}
			add(linkProblem(&st.Link, reason, detail))
			continue
		}
		if st.badRow != "" {
			add(linkProblem(&st.Link, ReasonRowChanged, st.badRow))
		}
		st.ds = nil
	}

	sort.SliceStable(problems, func(i, j int) bool {
		a, b := problems[i], problems[j]
		if !a.MinTS.Equal(b.MinTS) {
			return a.MinTS.Before(b.MinTS)
		}
		return a.Seq < b.Seq
	})
	rep.Total = len(problems)
	rep.OK = len(problems) == 0
	if len(problems) > MaxProblems {
		problems = problems[:MaxProblems]
	}
	rep.Problems = problems
	if len(problems) > 0 {
		rep.FirstBad = &rep.Problems[0]
	}
	return rep, nil
}

func linkProblem(l *Link, reason, detail string) Problem {
	return Problem{Seq: l.Seq, Kind: l.Kind, Batch: l.Batch, MinTS: l.MinTS, MaxTS: l.MaxTS, Reason: reason, Detail: detail}
}

// deletedByRetention tells whether a later retention link allowed deleting
// the rows of batch link l.
func deletedByRetention(l *Link, rs []retention) bool {
	max := l.MaxTS.UnixMicro()
	for _, r := range rs {
		if r.seq > l.Seq && max < r.rowsBefore {
			return true
		}
	}
	return false
}

// contentProblem checks a row's content against its hashes; erasure and
// body retention legitimately leave the content empty.
func contentProblem(r *Row, c *Content, erased bool, bodiesBefore int64) string {
	if TextHash(c) != r.TextHash && !(erased && c.TextEmpty()) {
		return "prompt, response, reasoning or tool_calls changed"
	}
	if BodyHash(c) != r.BodyHash && !((erased || r.TSMicro < bodiesBefore) && c.BodiesEmpty()) {
		return "request_body or response_body changed"
	}
	return ""
}

// Summary is a few lines for people: the verdict, the counts, the head to
// record elsewhere, and the first problems.
func (r *Report) Summary() string {
	var b strings.Builder
	if r.OK {
		b.WriteString("verify: OK\n")
	} else {
		fmt.Fprintf(&b, "verify: FAILED (%d problems)\n", r.Total)
	}
	fmt.Fprintf(&b, "links %d (batches recomputed %d, deleted by retention %d, erasures %d, retention runs %d); rows %d; unchained %d\n",
		r.Links, r.Checked, r.Deleted, r.Erasures, r.Retentions, r.Rows, r.Unchained)
	if r.Head != nil {
		fmt.Fprintf(&b, "head: seq %d hash %s (record it outside the store; pass it back as an anchor)\n", r.Head.Seq, r.Head.Hash)
	}
	for i, p := range r.Problems {
		if i == 10 {
			fmt.Fprintf(&b, "… %d more\n", r.Total-10)
			break
		}
		if i == 0 {
			b.WriteString("first bad: ")
		} else {
			b.WriteString("           ")
		}
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}
