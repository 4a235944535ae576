package dashboards

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite dashboards/generated/*.json from Build")

// generatedDir holds the committed dashboards (relative to this package).
const generatedDir = "generated"

// TestGeneratedUpToDate fails when a committed dashboard differs from what
// Build generates; `go test ./dashboards -update` rewrites them.
func TestGeneratedUpToDate(t *testing.T) {
	for _, ds := range Datasources() {
		t.Run(ds, func(t *testing.T) {
			want, err := Marshal(ds)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(generatedDir, FileName(ds))
			if *update {
				paths, err := Write(ds, generatedDir)
				if err != nil {
					t.Fatal(err)
				}
				if len(paths) != 1 || paths[0] != path {
					t.Fatalf("Write returned %v, want [%s]", paths, path)
				}
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./dashboards -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s is stale: run go test ./dashboards -update and commit it", path)
			}
		})
	}
}

func TestWriteCreatesDirAndFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	paths, err := Write(ClickHouse, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 1 || filepath.Base(paths[0]) != "llmtap-clickhouse.json" {
		t.Fatalf("paths = %v", paths)
	}
	b, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Marshal(ClickHouse)
	if !bytes.Equal(b, want) {
		t.Error("written file differs from Marshal")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("dir has %d entries, want only the dashboard (no temp files)", len(entries))
	}
	if _, err := Write("mysql", dir); err == nil {
		t.Error("Write(mysql) succeeded")
	}
}
