// Package dashboards generates llmtap's Grafana dashboard, one per
// datasource, with grafana-foundation-sdk (v0.0.12).
//
// The SQL panels read the rollup tables of schema migrations 0004–0006
// (llm_usage_1m, llm_usage_1h, llm_usage_all_1m, llm_status_1m; see
// ROLLUPS.md), Recent conversations reads llm_requests. The datasource is a
// dashboard variable (${datasource}, of the datasource's plugin type), so the JSON
// imports into any Grafana, and a multi-select "consumer" variable with All
// filters every panel. Panel SQL uses only the macros each datasource
// documents; ClickHouse SQL avoids what 18.16 lacks (toStartOfInterval, window
// functions) and is tested on 18.16, not yet on a current release. Every
// panel's SQL is executed against real databases in this package's tests
// (see macro for the expansion Grafana performs).
//
// Build(Prometheus) builds the same charts from the proxy's Prometheus
// metrics instead (prometheus.go); its PromQL is executed on a real
// Prometheus scraping real proxy traffic in this package's tests.
//
// The generated files are committed under dashboards/generated/ and
// provisioning examples under dashboards/provisioning/; README.md explains
// importing. `go test ./dashboards -update` rewrites the generated files.
package dashboards

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/llmtap/llmtap/dashboards/sqlquery"
)

// Datasource kinds accepted by Build, Write and Panels.
const (
	Postgres   = "postgres"
	ClickHouse = "clickhouse"
)

// Datasources lists the SQL kinds (dashboards over llm_requests), in a
// stable order. Build, Marshal and Write also accept Prometheus.
func Datasources() []string { return []string{Postgres, ClickHouse} }

// pluginType maps a datasource kind to its Grafana plugin id.
func pluginType(datasource string) (string, error) {
	switch datasource {
	case Postgres:
		return sqlquery.PostgresType, nil
	case ClickHouse:
		return sqlquery.ClickHouseType, nil
	}
	return "", fmt.Errorf("dashboards: unknown datasource %q (want %s or %s)", datasource, Postgres, ClickHouse)
}

// Build returns the dashboard for a datasource kind ("postgres",
// "clickhouse" or "prometheus").
func Build(datasource string) (dashboard.Dashboard, error) {
	switch datasource {
	case Postgres, ClickHouse:
		return buildSQL(datasource)
	case Prometheus:
		return buildPrometheus()
	}
	return dashboard.Dashboard{}, fmt.Errorf("dashboards: unknown datasource %q (want %s, %s or %s)", datasource, Postgres, ClickHouse, Prometheus)
}

// FileName is the name Write gives the dashboard of a datasource kind.
func FileName(datasource string) string { return "llmtap-" + datasource + ".json" }

// Marshal returns the dashboard JSON exactly as Write stores it (indented,
// trailing newline).
func Marshal(datasource string) ([]byte, error) {
	d, err := Build(datasource)
	if err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("dashboards: marshal %s: %w", datasource, err)
	}
	return append(b, '\n'), nil
}

// Write writes the dashboard JSON of a datasource kind into dir (created if
// missing) as FileName(datasource) and returns the paths written. The file is
// replaced atomically (temp file + rename).
func Write(datasource, dir string) ([]string, error) {
	b, err := Marshal(datasource)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("dashboards: %w", err)
	}
	path := filepath.Join(dir, FileName(datasource))
	tmp, err := os.CreateTemp(dir, ".llmtap-dashboard-*")
	if err != nil {
		return nil, fmt.Errorf("dashboards: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("dashboards: write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("dashboards: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("dashboards: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("dashboards: %w", err)
	}
	return []string{path}, nil
}

// Panel is one panel's title and queries, for tests and benchmarks.
type Panel struct {
	Title   string
	Targets []Target
}

// Target is one query of a panel.
type Target struct {
	RefID  string
	Format sqlquery.Format
	// SQL is the panel's rawSql: Grafana macros and variables unexpanded.
	SQL string
}

// Panels returns every panel of the datasource kind's dashboard with its
// raw SQL, in dashboard order.
func Panels(datasource string) ([]Panel, error) {
	if _, err := pluginType(datasource); err != nil {
		return nil, err
	}
	out := make([]Panel, 0, len(specs))
	for _, s := range specs {
		p := Panel{Title: s.title}
		for _, t := range s.targets {
			p.Targets = append(p.Targets, Target{RefID: t.refID, Format: t.format, SQL: t.sql(datasource)})
		}
		out = append(out, p)
	}
	return out, nil
}

// ConsumerVariableSQL is the query of the consumer variable (macros
// unexpanded).
func ConsumerVariableSQL(datasource string) (string, error) {
	if _, err := pluginType(datasource); err != nil {
		return "", err
	}
	return consumerVariableSQL[datasource], nil
}

func (t target) sql(datasource string) string {
	if datasource == ClickHouse {
		return t.ch
	}
	return t.pg
}

var titles = map[string]string{
	Postgres:   "llmtap: LLM usage (PostgreSQL)",
	ClickHouse: "llmtap: LLM usage (ClickHouse)",
}

// dashboardMeta is what differs between the generated dashboards' skeletons.
type dashboardMeta struct {
	title, kind, plugin, from string
	dsRef                     common.DataSourceRef
	consumerQuery, allValue   string // the consumer variable's query and All value
}

// newDashboard starts a dashboard with the settings and variables every
// llmtap dashboard shares: a datasource variable of the plugin's type and a
// multi-select consumer variable (All included) that filters every panel.
func newDashboard(m dashboardMeta) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(m.title).
		Uid("llmtap-"+m.kind).
		Description("Who called the model, how much, how fast, and what failed: generated by `llmtap dashboards` from "+m.from+".").
		Tags([]string{"llmtap", "llm", m.kind}).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Refresh("1m").
		Time("now-6h", "now").
		Timezone("browser").
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").
			Label("Datasource").
			Type(m.plugin)).
		WithVariable(dashboard.NewQueryVariableBuilder("consumer").
			Label("Consumer").
			Datasource(m.dsRef).
			Query(dashboard.StringOrMap{String: ptr(m.consumerQuery)}).
			Definition(m.consumerQuery).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc).
			Multi(true).
			IncludeAll(true).
			AllValue(m.allValue).
			Current(dashboard.VariableOption{
				Text:  dashboard.StringOrArrayOfString{ArrayOfString: []string{"All"}},
				Value: dashboard.StringOrArrayOfString{ArrayOfString: []string{"$__all"}},
			}))
}

func buildSQL(datasource string) (dashboard.Dashboard, error) {
	plugin, err := pluginType(datasource)
	if err != nil {
		return dashboard.Dashboard{}, err
	}
	dsRef := common.DataSourceRef{Type: ptr(plugin), Uid: ptr("${datasource}")}
	varSQL := consumerVariableSQL[datasource]

	b := newDashboard(dashboardMeta{
		title: titles[datasource], kind: datasource, plugin: plugin, dsRef: dsRef,
		from:          "the llm_requests table",
		consumerQuery: varSQL, allValue: AllValue,
	})

	for i, s := range specs {
		id := uint32(i + 1)
		var targets []cog.Builder[variantsDataquery]
		for _, t := range s.targets {
			targets = append(targets, sqlquery.New(plugin, t.sql(datasource)).RefId(t.refID).Format(t.format))
		}
		switch s.viz {
		case vizTable:
			b.WithPanel(tablePanel(s, id, dsRef, targets))
		default:
			b.WithPanel(timeSeriesPanel(s, id, dsRef, targets, datasource))
		}
	}
	d, err := b.Build()
	if err != nil {
		return dashboard.Dashboard{}, fmt.Errorf("dashboards: build %s: %w", datasource, err)
	}
	return d, nil
}

func ptr[T any](v T) *T { return &v }
