// render: the part of `helm template` the kvindex chart needs, for CI without Helm.
//
// Helm's template language is Go's text/template plus sprig; this loads
// Chart.yaml and values.yaml, merges -f override files over the values as Helm
// does, and executes every templates/*.yaml with .Values, .Release, .Chart,
// .Capabilities and .Template and Helm's own functions (include, tpl, required,
// toYaml, fromYaml, toJson, fromJson; lookup fails). Files starting with "_" are
// partials; NOTES.txt is rendered only with -notes.
//
//	render [-f values.yaml]... [-name R] [-namespace N] [-notes] CHART_DIR
//
// Prints a multi-document YAML stream ("# Source:" comments as helm does) and
// exits 1 with the template error on failure.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	yaml "gopkg.in/yaml.v2"
)

type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

// apiVersions answers .Capabilities.APIVersions.Has "group/version".
type apiVersions []string

func (a apiVersions) Has(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

// readYAML loads a YAML map the way Helm does (sigs.k8s.io/yaml: YAML -> JSON
// -> Go), so numbers are float64 and keys strings, as templates see them in Helm.
func readYAML(path string) (map[string]interface{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw interface{}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	js, err := json.Marshal(stringKeys(raw))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[string]interface{}{}
	if err := json.Unmarshal(js, &out); err != nil {
		return nil, fmt.Errorf("%s: not a map: %w", path, err)
	}
	return out, nil
}

func stringKeys(v interface{}) interface{} {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		m := map[string]interface{}{}
		for k, x := range t {
			m[fmt.Sprint(k)] = stringKeys(x)
		}
		return m
	case []interface{}:
		for i, x := range t {
			t[i] = stringKeys(x)
		}
	}
	return v
}

// coalesce merges override into base like Helm: maps merge deeply, other
// values replace, and null deletes the key.
func coalesce(base, override map[string]interface{}) {
	for k, v := range override {
		if v == nil {
			delete(base, k)
			continue
		}
		if bm, ok := base[k].(map[string]interface{}); ok {
			if om, ok := v.(map[string]interface{}); ok {
				coalesce(bm, om)
				continue
			}
		}
		base[k] = v
	}
}

func toYAML(v interface{}) string {
	// Through JSON first like Helm, so structs and maps print the same way.
	js, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	var generic interface{}
	if err := yaml.Unmarshal(js, &generic); err != nil {
		return ""
	}
	out, err := yaml.Marshal(generic)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(out), "\n")
}

// funcMap is sprig's (less env/expandenv, as in Helm) plus Helm's own.
func funcMap(root **template.Template) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	f["toYaml"] = toYAML
	f["fromYaml"] = func(s string) map[string]interface{} {
		var raw interface{}
		m := map[string]interface{}{}
		if err := yaml.Unmarshal([]byte(s), &raw); err != nil {
			m["Error"] = err.Error()
			return m
		}
		if sm, ok := stringKeys(raw).(map[string]interface{}); ok {
			return sm
		}
		return m
	}
	f["toJson"] = func(v interface{}) string {
		b, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(b)
	}
	f["fromJson"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return nil, errors.New(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return nil, errors.New(msg)
		}
		return v, nil
	}
	f["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		if err := (*root).ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := (*root).Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	f["lookup"] = func(...interface{}) (map[string]interface{}, error) {
		return nil, errors.New("lookup is not supported offline")
	}
	return f
}

func run() error {
	var files valueFiles
	flag.Var(&files, "f", "values file merged over the chart's values.yaml (repeatable)")
	name := flag.String("name", "kvindex", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	notes := flag.Bool("notes", false, "render templates/NOTES.txt instead of the manifests")
	flag.Parse()
	if flag.NArg() != 1 {
		return errors.New("usage: render [-f values.yaml]... [-name R] [-namespace N] [-notes] CHART_DIR")
	}
	chartDir := flag.Arg(0)

	chartYAML, err := readYAML(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	values, err := readYAML(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return err
	}
	for _, f := range files {
		override, err := readYAML(f)
		if err != nil {
			return err
		}
		coalesce(values, override)
	}
	chartName, _ := chartYAML["name"].(string)
	chart := map[string]interface{}{}
	for yamlKey, field := range map[string]string{
		"name": "Name", "version": "Version", "appVersion": "AppVersion", "description": "Description",
		"type": "Type", "apiVersion": "APIVersion", "kubeVersion": "KubeVersion", "keywords": "Keywords",
		"home": "Home", "sources": "Sources", "icon": "Icon",
	} {
		chart[field] = chartYAML[yamlKey]
	}

	// Every file under templates/ goes into one set, so defines are shared.
	paths, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil {
		return err
	}
	sort.Strings(paths)
	var root *template.Template
	root = template.New("root").Funcs(funcMap(&root)).Option("missingkey=zero")
	var manifests []string
	notesName := ""
	for _, p := range paths {
		base := filepath.Base(p)
		tname := chartName + "/templates/" + base
		text, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if _, err := root.New(tname).Parse(string(text)); err != nil {
			return err
		}
		switch {
		case base == "NOTES.txt":
			notesName = tname
		case strings.HasPrefix(base, "_"):
		default:
			manifests = append(manifests, tname)
		}
	}
	if *notes {
		if notesName == "" {
			return errors.New("chart has no templates/NOTES.txt")
		}
		manifests = []string{notesName}
	}

	capabilities := map[string]interface{}{
		"KubeVersion": map[string]interface{}{"Version": "v1.30.0", "GitVersion": "v1.30.0", "Major": "1", "Minor": "30"},
		"APIVersions": apiVersions{"v1", "apps/v1", "policy/v1", "monitoring.coreos.com/v1"},
		"HelmVersion": map[string]interface{}{"Version": "v3.14.0"},
	}
	release := map[string]interface{}{
		"Name": *name, "Namespace": *namespace, "Service": "Helm",
		"IsInstall": true, "IsUpgrade": false, "Revision": 1,
	}
	var out strings.Builder
	for _, tname := range manifests {
		data := map[string]interface{}{
			"Values": values, "Release": release, "Chart": chart, "Capabilities": capabilities,
			"Template": map[string]interface{}{"Name": tname, "BasePath": chartName + "/templates"},
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, tname, data); err != nil {
			return err
		}
		rendered := strings.ReplaceAll(buf.String(), "<no value>", "")
		if *notes {
			out.WriteString(rendered)
			continue
		}
		if strings.TrimSpace(rendered) == "" {
			continue
		}
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", tname, strings.TrimSpace(rendered))
	}
	_, err = os.Stdout.WriteString(out.String())
	return err
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}
