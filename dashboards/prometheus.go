package dashboards

import (
	"fmt"
	"strconv"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// Prometheus is the datasource kind of the dashboard built from the proxy's
// metrics (admin listener /metrics) instead of the llm_requests table:
// Build(Prometheus), Write(Prometheus, dir) → llmtap-prometheus.json.
const Prometheus = "prometheus"

// PrometheusPluginType is the Grafana plugin id of the Prometheus datasource.
const PrometheusPluginType = "prometheus"

// ConsumerVariablePromQL is the query of the Prometheus dashboard's consumer
// variable: the consumer label values of llmtap_requests_total (including
// "anonymous" and the cardinality overflow "other").
const ConsumerVariablePromQL = `label_values(llmtap_requests_total, consumer)`

// PromAllValue is the consumer variable's custom all value: every query
// matches consumer=~"$consumer", so All is the regexp .* (no filter) instead
// of a long alternation of every consumer. A selection expands to
// Grafana's regexp-escaped alternation (alice|bob).
const PromAllValue = `.*`

// PromPanel is one panel of the Prometheus dashboard, for tests.
type PromPanel struct {
	Title   string
	Unit    string
	Table   bool
	Targets []PromTarget
}

// PromTarget is one PromQL query of a panel: Grafana variables
// ($consumer, $__rate_interval, $__range) unexpanded. Instant targets are
// instant queries in table format (table panels); the others are range
// queries in time series format.
type PromTarget struct {
	RefID   string
	Expr    string
	Legend  string
	Instant bool
}

// The PromQL building blocks. promSel is the consumer filter of every query.
const (
	promSel   = `consumer=~"$consumer"`
	promReqs  = `llmtap_requests_total{` + promSel + `}`
	promToks  = `llmtap_tokens_total{` + promSel + `}`
	promLat   = `llmtap_request_duration_seconds_bucket{` + promSel + `}`
	promTTFT  = `llmtap_time_to_first_token_seconds_bucket{` + promSel + `}`
	promRange = `[$__range]`
	promRate  = `[$__rate_interval]`
)

// promTopN keeps the series of expr (one per consumer) of the TopN
// consumers by the increase of counter over the whole dashboard range
// (evaluated once, at the range's end), like the SQL dashboards' top-10 in
// the range, so consumers do not come and go between steps.
func promTopN(expr, counter string) string {
	return expr + `
and on (consumer)
  topk(` + strconv.Itoa(TopN) + `, sum by (consumer) (increase(` + counter + promRange + ` @ end())))`
}

// promQuantile is a latency quantile in milliseconds from a histogram's
// buckets, aggregated by the given labels (plus le).
func promQuantile(q, buckets, window, by string) string {
	return `histogram_quantile(` + q + `, sum by (` + by + `) (rate(` + buckets + window + `))) * 1000`
}

type promSpec struct {
	spec
	targets []PromTarget
}

var promSpecs = []promSpec{
	{
		spec: spec{title: TitleRequestsPerMinute,
			description: "Requests per minute of the 10 consumers with the most requests in the time range (llmtap_requests_total).",
			viz:         vizTimeSeries, unit: "reqpm", interval: "1m", w: 12, h: 8},
		targets: []PromTarget{{RefID: "A", Legend: "{{consumer}}",
			Expr: promTopN(`sum by (consumer) (rate(`+promReqs+promRate+`)) * 60`, promReqs)}},
	},
	{
		spec: spec{title: TitleTokensPerMinute,
			description: "Tokens (prompt + completion, from upstream usage) per minute of the 10 consumers with the most tokens in the time range (llmtap_tokens_total).",
			viz:         vizTimeSeries, unit: "short", interval: "1m", w: 12, h: 8},
		targets: []PromTarget{{RefID: "A", Legend: "{{consumer}}",
			Expr: promTopN(`sum by (consumer) (rate(`+promToks+promRate+`)) * 60`, promToks)}},
	},
	{
		spec: spec{title: TitleErrorCodes,
			description: "Responses with an error status per minute, by status code: query A holds client errors (4xx, incl. 401 without a valid key, 429 rate limited, 499 client gone), query B server errors (5xx).",
			viz:         vizBars, unit: "reqpm", interval: "1m", w: 12, h: 8},
		targets: []PromTarget{
			{RefID: "A", Legend: "{{status}}",
				Expr: `sum by (status) (rate(llmtap_requests_total{` + promSel + `, status=~"4.."}` + promRate + `)) * 60`},
			{RefID: "B", Legend: "{{status}}",
				Expr: `sum by (status) (rate(llmtap_requests_total{` + promSel + `, status=~"5.."}` + promRate + `)) * 60`},
		},
	},
	{
		spec: spec{title: TitleLatency,
			description: "Total request latency (arrival to end of response), median and 95th percentile, interpolated from the llmtap_request_duration_seconds buckets.",
			viz:         vizTimeSeries, unit: "ms", interval: "1m", w: 12, h: 8},
		targets: []PromTarget{
			{RefID: "A", Legend: "p50", Expr: promQuantile("0.5", promLat, promRate, "le")},
			{RefID: "B", Legend: "p95", Expr: promQuantile("0.95", promLat, promRate, "le")},
		},
	},
	{
		spec: spec{title: TitleTTFT,
			description: "Time to first token of streamed responses, median and 95th percentile, interpolated from the llmtap_time_to_first_token_seconds buckets.",
			viz:         vizTimeSeries, unit: "ms", interval: "1m", w: 12, h: 8},
		targets: []PromTarget{
			{RefID: "A", Legend: "p50", Expr: promQuantile("0.5", promTTFT, promRate, "le")},
			{RefID: "B", Legend: "p95", Expr: promQuantile("0.95", promTTFT, promRate, "le")},
		},
	},
	{
		spec: spec{title: TitleDailyUsage,
			description: "Requests (left axis) and tokens (right axis) of the 10 consumers with the most requests over the last 7 days; each bar is the 24 hours up to its time.",
			viz:         vizBars, unit: "short", interval: "1d", timeFrom: "7d", w: 12, h: 8,
			rightAxis: "tokens$"},
		targets: []PromTarget{
			{RefID: "A", Legend: "{{consumer}} requests",
				Expr: promTopN(`sum by (consumer) (increase(`+promReqs+`[1d]))`, promReqs)},
			{RefID: "B", Legend: "{{consumer}} tokens",
				Expr: promTopN(`sum by (consumer) (increase(`+promToks+`[1d]))`, promReqs)},
		},
	},
	{
		spec: spec{title: TitleUsageTable,
			description: "Per consumer over the last 24 hours: requests, prompt and completion tokens, error responses (status >= 400) and latency percentiles (from histogram buckets).",
			viz:         vizTable, unit: "short", timeFrom: "24h", w: 24, h: 8,
			msColumns: []string{"p50 latency", "p95 latency"}},
		targets: []PromTarget{
			{RefID: "A", Instant: true, Expr: `sum by (consumer) (increase(` + promReqs + promRange + `))`},
			{RefID: "B", Instant: true, Expr: `sum by (consumer) (increase(llmtap_tokens_total{` + promSel + `, type="prompt"}` + promRange + `))`},
			{RefID: "C", Instant: true, Expr: `sum by (consumer) (increase(llmtap_tokens_total{` + promSel + `, type="completion"}` + promRange + `))`},
			// Consumers without errors show 0 rather than an empty cell.
			{RefID: "D", Instant: true, Expr: `sum by (consumer) (increase(llmtap_requests_total{` + promSel + `, status=~"[45].."}` + promRange + `))
or on (consumer)
  0 * sum by (consumer) (increase(` + promReqs + promRange + `))`},
			{RefID: "E", Instant: true, Expr: promQuantile("0.5", promLat, promRange, "consumer, le")},
			{RefID: "F", Instant: true, Expr: promQuantile("0.95", promLat, promRange, "consumer, le")},
		},
	},
}

// promTableColumns names the table's merged columns (Grafana names the
// value of instant query X "Value #X").
var promTableColumns = []struct{ from, to string }{
	{"consumer", "Consumer"},
	{"Value #A", "Requests"},
	{"Value #B", "Prompt tokens"},
	{"Value #C", "Completion tokens"},
	{"Value #D", "Errors"},
	{"Value #E", "p50 latency"},
	{"Value #F", "p95 latency"},
}

// PrometheusPanels returns every panel of the Prometheus dashboard with
// its PromQL, in dashboard order.
func PrometheusPanels() []PromPanel {
	out := make([]PromPanel, 0, len(promSpecs))
	for _, s := range promSpecs {
		out = append(out, PromPanel{Title: s.title, Unit: s.unit, Table: s.viz == vizTable,
			Targets: append([]PromTarget(nil), s.targets...)})
	}
	return out
}

func buildPrometheus() (dashboard.Dashboard, error) {
	dsRef := common.DataSourceRef{Type: ptr(PrometheusPluginType), Uid: ptr("${datasource}")}
	b := newDashboard(dashboardMeta{
		title: "llmtap: LLM usage (Prometheus)", kind: Prometheus, plugin: PrometheusPluginType, dsRef: dsRef,
		from:          "the proxy's Prometheus metrics",
		consumerQuery: ConsumerVariablePromQL, allValue: PromAllValue,
	})

	for i, s := range promSpecs {
		id := uint32(i + 1)
		var targets []cog.Builder[variantsDataquery]
		for _, t := range s.targets {
			q := prometheus.NewDataqueryBuilder().
				Datasource(dsRef).
				RefId(t.RefID).
				Expr(t.Expr).
				EditorMode(prometheus.QueryEditorModeCode)
			if t.Instant {
				q.Instant().Format(prometheus.PromQueryFormatTable)
			} else {
				q.Range().Format(prometheus.PromQueryFormatTimeSeries).LegendFormat(t.Legend)
			}
			targets = append(targets, q)
		}
		switch s.viz {
		case vizTable:
			b.WithPanel(tablePanel(s.spec, id, dsRef, targets).
				WithTransformation(dashboard.DataTransformerConfig{Id: "merge", Options: map[string]any{}}).
				WithTransformation(promTableOrganize()).
				WithTransformation(dashboard.DataTransformerConfig{Id: "sortBy", Options: map[string]any{
					"sort": []map[string]any{{"field": "Requests", "desc": true}},
				}}))
		default:
			b.WithPanel(timeSeriesPanel(s.spec, id, dsRef, targets, Prometheus))
		}
	}
	d, err := b.Build()
	if err != nil {
		return dashboard.Dashboard{}, fmt.Errorf("dashboards: build %s: %w", Prometheus, err)
	}
	return d, nil
}

// promTableOrganize drops the Time column of the merged instant queries,
// names the value columns and orders them.
func promTableOrganize() dashboard.DataTransformerConfig {
	rename := map[string]string{}
	index := map[string]int{}
	for i, c := range promTableColumns {
		rename[c.from] = c.to
		index[c.from] = i
	}
	return dashboard.DataTransformerConfig{Id: "organize", Options: map[string]any{
		"excludeByName": map[string]bool{"Time": true},
		"renameByName":  rename,
		"indexByName":   index,
	}}
}

// init lets the SDK unmarshal the dashboard's Prometheus
// queries into prometheus.Dataquery values.
func init() {
	cog.NewRuntime().RegisterDataqueryVariant(prometheus.VariantConfig())
}
