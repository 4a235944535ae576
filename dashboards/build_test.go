package dashboards

import (
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/llmtap/llmtap/dashboards/sqlquery"
)

var wantPanels = []struct {
	title, typ, unit string
	targets          int
}{
	{TitleRequestsPerMinute, "timeseries", "reqpm", 1},
	{TitleTokensPerMinute, "timeseries", "short", 1},
	{TitleErrorCodes, "timeseries", "short", 2},
	{TitleLatency, "timeseries", "ms", 1},
	{TitleTTFT, "timeseries", "ms", 1},
	{TitleDailyUsage, "timeseries", "short", 1},
	{TitleUsageTable, "table", "short", 1},
	{TitleRecent, "table", "", 1},
}

// generic decodes the dashboard JSON as Grafana would see it.
func generic(t *testing.T, ds string) map[string]any {
	t.Helper()
	b, err := Marshal(ds)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDashboardShape(t *testing.T) {
	plugin := map[string]string{Postgres: "grafana-postgresql-datasource", ClickHouse: "grafana-clickhouse-datasource"}
	targetKeys := map[string]string{
		Postgres:   "datasource,editorMode,format,rawQuery,rawSql,refId",
		ClickHouse: "datasource,editorType,format,queryType,rawSql,refId",
	}
	for _, ds := range Datasources() {
		t.Run(ds, func(t *testing.T) {
			d := generic(t, ds)
			if d["uid"] != "llmtap-"+ds {
				t.Errorf("uid = %v", d["uid"])
			}
			panels := d["panels"].([]any)
			if len(panels) != len(wantPanels) {
				t.Fatalf("%d panels, want %d", len(panels), len(wantPanels))
			}
			code, err := Panels(ds)
			if err != nil {
				t.Fatal(err)
			}
			ids := map[float64]bool{}
			for i, w := range wantPanels {
				p := panels[i].(map[string]any)
				if p["title"] != w.title || p["type"] != w.typ {
					t.Errorf("panel %d = %v %v, want %q %s", i, p["type"], p["title"], w.title, w.typ)
				}
				if code[i].Title != w.title {
					t.Errorf("Panels()[%d].Title = %q", i, code[i].Title)
				}
				ids[p["id"].(float64)] = true
				defaults := p["fieldConfig"].(map[string]any)["defaults"].(map[string]any)
				if defaults["decimals"] != 0.0 {
					t.Errorf("%s: decimals = %v, want 0", w.title, defaults["decimals"])
				}
				if u, _ := defaults["unit"].(string); u != w.unit {
					t.Errorf("%s: unit = %q, want %q", w.title, u, w.unit)
				}
				if ref := p["datasource"].(map[string]any); ref["type"] != plugin[ds] || ref["uid"] != "${datasource}" {
					t.Errorf("%s: panel datasource = %v", w.title, ref)
				}
				targets := p["targets"].([]any)
				if len(targets) != w.targets || len(code[i].Targets) != w.targets {
					t.Fatalf("%s: %d targets, want %d", w.title, len(targets), w.targets)
				}
				for j, raw := range targets {
					tg := raw.(map[string]any)
					var keys []string
					for k := range tg {
						keys = append(keys, k)
					}
					sort.Strings(keys)
					if strings.Join(keys, ",") != targetKeys[ds] {
						t.Errorf("%s: target keys %v, want %s", w.title, keys, targetKeys[ds])
					}
					if ref := tg["datasource"].(map[string]any); ref["type"] != plugin[ds] || ref["uid"] != "${datasource}" {
						t.Errorf("%s: target datasource = %v", w.title, ref)
					}
					if tg["rawSql"] != code[i].Targets[j].SQL || tg["refId"] != code[i].Targets[j].RefID {
						t.Errorf("%s: target %d differs from Panels()", w.title, j)
					}
					table := code[i].Targets[j].Format == sqlquery.Table
					if table != (w.typ == "table") {
						t.Errorf("%s: format %v on a %s panel", w.title, code[i].Targets[j].Format, w.typ)
					}
					switch ds {
					case Postgres:
						if tg["editorMode"] != "code" || tg["rawQuery"] != true || tg["format"] != map[bool]string{true: "table", false: "time_series"}[table] {
							t.Errorf("%s: postgres target %v", w.title, tg)
						}
					case ClickHouse:
						if tg["editorType"] != "sql" || tg["queryType"] != map[bool]string{true: "table", false: "timeseries"}[table] || tg["format"] != map[bool]float64{true: 1, false: 0}[table] {
							t.Errorf("%s: clickhouse target %v", w.title, tg)
						}
					}
				}
			}
			if len(ids) != len(wantPanels) {
				t.Errorf("panel ids not unique: %v", ids)
			}
			checkVariables(t, d, plugin[ds], ds)
		})
	}
}

func checkVariables(t *testing.T, d map[string]any, plugin, ds string) {
	t.Helper()
	vars := d["templating"].(map[string]any)["list"].([]any)
	if len(vars) != 2 {
		t.Fatalf("%d variables, want 2", len(vars))
	}
	dsVar, cVar := vars[0].(map[string]any), vars[1].(map[string]any)
	if dsVar["type"] != "datasource" || dsVar["name"] != "datasource" || dsVar["query"] != plugin {
		t.Errorf("datasource variable = %v", dsVar)
	}
	sql, _ := ConsumerVariableSQL(ds)
	if cVar["type"] != "query" || cVar["name"] != "consumer" || cVar["query"] != sql || cVar["definition"] != sql ||
		cVar["multi"] != true || cVar["includeAll"] != true || cVar["allValue"] != AllValue || cVar["refresh"] != 2.0 {
		t.Errorf("consumer variable = %v", cVar)
	}
	if ref := cVar["datasource"].(map[string]any); ref["type"] != plugin || ref["uid"] != "${datasource}" {
		t.Errorf("consumer variable datasource = %v", ref)
	}
	cur := cVar["current"].(map[string]any)
	if v := cur["value"].([]any); len(v) != 1 || v[0] != "$__all" {
		t.Errorf("consumer current = %v, want All", cur)
	}
}

// Only the macros each datasource documents, every panel filtered by time
// and consumer, and nothing ClickHouse 18.16 lacks.
func TestPanelSQLUsesDocumentedMacros(t *testing.T) {
	allowed := map[string]map[string]bool{
		Postgres:   {"timeFilter": true, "timeGroupAlias": true, "timeGroup": true, "interval": true, "interval_ms": true, "timeFrom": true, "timeTo": true},
		ClickHouse: {"timeFilter": true, "interval_s": true, "fromTime": true, "toTime": true},
	}
	macroRE := regexp.MustCompile(`\$__(\w+)`)
	varRE := regexp.MustCompile(`\$\{?([a-z]\w*)`)
	for _, ds := range Datasources() {
		panels, _ := Panels(ds)
		for _, p := range panels {
			for _, tg := range p.Targets {
				for _, m := range macroRE.FindAllStringSubmatch(tg.SQL, -1) {
					if !allowed[ds][m[1]] {
						t.Errorf("%s %s: macro $__%s", ds, p.Title, m[1])
					}
				}
				for _, m := range varRE.FindAllStringSubmatch(tg.SQL, -1) {
					if m[1] != "consumer" {
						t.Errorf("%s %s: variable $%s", ds, p.Title, m[1])
					}
				}
				byConsumer := strings.Contains(tg.SQL, consumerFilter) ||
					strings.Contains(tg.SQL, isAll) && strings.Contains(tg.SQL, notAll)
				if !regexp.MustCompile(`\$__timeFilter\((ts|minute)\)`).MatchString(tg.SQL) || !byConsumer {
					t.Errorf("%s %s/%s: not filtered by time and consumer", ds, p.Title, tg.RefID)
				}
				if ds == ClickHouse {
					for _, bad := range []string{"toStartOfInterval", "$__timeInterval", "JSONExtract", "LowCardinality", "FINAL"} {
						if strings.Contains(tg.SQL, bad) {
							t.Errorf("%s: ClickHouse SQL uses %s", p.Title, bad)
						}
					}
				}
			}
		}
	}
}

func TestRoundTripThroughSDK(t *testing.T) {
	for _, ds := range Datasources() {
		built, err := Build(ds)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := Marshal(ds)
		var back dashboard.Dashboard
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if len(back.Panels) != len(built.Panels) {
			t.Fatalf("%s: %d panels after round trip", ds, len(back.Panels))
		}
		for i, p := range back.Panels {
			for j, q := range p.Panel.Targets {
				switch q.(type) {
				case sqlquery.PostgresQuery, sqlquery.ClickHouseQuery:
				default:
					t.Errorf("%s panel %d target %d unmarshals as %T", ds, i, j, q)
				}
				if !q.Equals(built.Panels[i].Panel.Targets[j]) {
					t.Errorf("%s panel %d target %d differs after round trip", ds, i, j)
				}
			}
		}
	}
}

func TestUnknownDatasource(t *testing.T) {
	for _, ds := range []string{"", "mysql", "Postgres"} {
		if _, err := Build(ds); err == nil {
			t.Errorf("Build(%q) succeeded", ds)
		}
		if _, err := Panels(ds); err == nil {
			t.Errorf("Panels(%q) succeeded", ds)
		}
	}
}
