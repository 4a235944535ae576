package limit

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func counterValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

// TestRefusalMetric: each refusal counts once under its reason.
func TestRefusalMetric(t *testing.T) {
	m, _ := newClocked(t)
	before := counterValue(t, refusals.WithLabelValues(ReasonRequests))
	lim := Limits{RPM: 1}
	madmit(t, m, lim)
	madmit(t, m, lim)
	madmit(t, m, lim)
	if got := counterValue(t, refusals.WithLabelValues(ReasonRequests)) - before; got != 2 {
		t.Fatalf("refusals counted %v, want 2", got)
	}
}
