package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestAPIGates: the buf gates of `make vet` catch an incompatible change
// to the API (a field renumbered) and a name outside the style, and pass
// the API as it is.
func TestAPIGates(t *testing.T) {
	buf, err := filepath.Abs(filepath.Join("..", "bin", "buf"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(buf); err != nil {
		t.Fatalf("%s is missing: run `make vet` (it builds the pinned buf)", buf)
	}
	released, err := filepath.Abs(filepath.Join("..", "proto", "released.binpb"))
	if err != nil {
		t.Fatal(err)
	}
	// A copy of proto/ (the .proto files and buf.yaml) that the cases edit.
	copyAPI := func(edit func(common string) string) string {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "credgw", "v1"), 0o755); err != nil {
			t.Fatal(err)
		}
		files, err := filepath.Glob(filepath.Join("..", "proto", "credgw", "v1", "*.proto"))
		if err != nil || len(files) == 0 {
			t.Fatalf("proto files: %v", err)
		}
		for _, f := range append(files, filepath.Join("..", "proto", "buf.yaml")) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			rel, _ := filepath.Rel(filepath.Join("..", "proto"), f)
			if filepath.Base(f) == "common.proto" {
				b = []byte(edit(string(b)))
			}
			if err := os.WriteFile(filepath.Join(dir, rel), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	bufRun := func(dir string, args ...string) (string, error) {
		cmd := exec.Command(buf, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	same := copyAPI(func(s string) string { return s })
	if out, err := bufRun(same, "lint"); err != nil {
		t.Fatalf("buf lint of the API as it is: %v\n%s", err, out)
	}
	if out, err := bufRun(same, "breaking", "--against", released); err != nil {
		t.Fatalf("buf breaking of the API as it is: %v\n%s", err, out)
	}

	renumbered := copyAPI(func(s string) string { return strings.Replace(s, "string card_uuid = 4;", "string card_uuid = 40;", 1) })
	out, err := bufRun(renumbered, "breaking", "--against", released)
	if err == nil || !strings.Contains(out, "card_uuid") {
		t.Errorf("buf breaking passed a renumbered field: %v\n%s", err, out)
	}

	badName := copyAPI(func(s string) string {
		return strings.Replace(s, "string upn = 5;", "string upn = 5;\n  string emailAlias = 99;", 1)
	})
	out, err = bufRun(badName, "lint")
	if err == nil || !strings.Contains(out, "emailAlias") {
		t.Errorf("buf lint passed a camelCase field: %v\n%s", err, out)
	}
}
