package dashboards

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/llmtap/llmtap/dashboards/sqlquery"
)

// The shipped provisioning files parse, name the right plugins, and the
// provider points at a folder.
func TestProvisioningFiles(t *testing.T) {
	want := map[string]string{Postgres: sqlquery.PostgresType, ClickHouse: sqlquery.ClickHouseType}
	for kind, plugin := range want {
		var f struct {
			APIVersion  int `yaml:"apiVersion"`
			Datasources []struct {
				Name, Type, UID, Access, URL, User string
				Editable                           bool
				JSONData                           map[string]any    `yaml:"jsonData"`
				Secure                             map[string]string `yaml:"secureJsonData"`
			} `yaml:"datasources"`
		}
		readYAML(t, filepath.Join("provisioning", "datasources", "llmtap-"+kind+".yaml"), &f)
		if f.APIVersion != 1 || len(f.Datasources) != 1 {
			t.Fatalf("%s: apiVersion %d, %d datasources", kind, f.APIVersion, len(f.Datasources))
		}
		ds := f.Datasources[0]
		if ds.Type != plugin || ds.UID != "llmtap-"+kind || ds.Name == "" {
			t.Errorf("%s: datasource %+v", kind, ds)
		}
		if ds.Secure["password"] == "" {
			t.Errorf("%s: password should come from secureJsonData", kind)
		}
		switch kind {
		case Postgres:
			if ds.JSONData["database"] != "llmtap" {
				t.Errorf("postgres jsonData %v", ds.JSONData)
			}
		case ClickHouse:
			if ds.JSONData["protocol"] != "native" || ds.JSONData["port"] != 9000 || ds.JSONData["host"] == nil {
				t.Errorf("clickhouse jsonData %v", ds.JSONData)
			}
		}
	}
	var p struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name, Type, Folder    string
			OrgID                 int  `yaml:"orgId"`
			DisableDeletion       bool `yaml:"disableDeletion"`
			AllowUIUpdates        bool `yaml:"allowUiUpdates"`
			UpdateIntervalSeconds int  `yaml:"updateIntervalSeconds"`
			Options               struct {
				Path                      string
				FoldersFromFilesStructure bool `yaml:"foldersFromFilesStructure"`
			}
		}
	}
	readYAML(t, filepath.Join("provisioning", "dashboards", "llmtap.yaml"), &p)
	if p.APIVersion != 1 || len(p.Providers) != 1 || p.Providers[0].Type != "file" || p.Providers[0].Options.Path == "" {
		t.Errorf("dashboard provider %+v", p)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
