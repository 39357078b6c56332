package test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/credgw/credgw/server"
)

// TestPackage builds the Debian package as `make package` does (its script,
// cmd/credgw/dist/build-deb.sh, on the binary TestMain built), unpacks it
// into a throwaway root and checks what it installs: the binary runs, file
// modes and owners, the conffile, the example config loads, every PIN and
// key the config reads from $CREDENTIALS_DIRECTORY is a LoadCredential= of
// the unit, the unit passes `systemd-analyze verify` and rates at most 2.0
// ("OK") in `systemd-analyze security`, and lintian finds no error.
func TestPackage(t *testing.T) {
	for _, tool := range []string{"dpkg-deb", "systemd-analyze", "lintian", "strip", "objdump"} {
		needTool(t, tool)
	}
	out := t.TempDir()
	// gzip: the same package, built in a fraction of xz's time.
	cmd := exec.Command("../cmd/credgw/dist/build-deb.sh", credgwBin, "v1.2.3-4-gabcdef0", out)
	cmd.Env = append(os.Environ(), "DEB_COMPRESSION=gzip")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("build-deb.sh: %v\n%s", err, stderr.String())
	}
	deb := strings.TrimSpace(string(b))
	arch := strings.TrimSpace(run(t, nil, true, "dpkg", "--print-architecture"))
	if want := filepath.Join(out, "credgw_1.2.3+4+gabcdef0_"+arch+".deb"); deb != want {
		t.Fatalf("package %q, want %q", deb, want)
	}

	// The control fields.
	fields := run(t, nil, true, "dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Depends")
	for _, want := range []string{"Package: credgw\n", "Version: 1.2.3+4+gabcdef0\n", "Architecture: " + arch + "\n", "Depends: libc6 (>= 2."} {
		if !strings.Contains(fields, want) {
			t.Errorf("control lacks %q:\n%s", want, fields)
		}
	}
	if conf := run(t, nil, true, "dpkg-deb", "-I", deb, "conffiles"); strings.TrimSpace(conf) != "/etc/credgw/credgw.yaml" {
		t.Errorf("conffiles = %q, want /etc/credgw/credgw.yaml", conf)
	}

	// Modes and owners as the archive holds them (dpkg installs these).
	listing := map[string][2]string{} // path -> mode, owner
	for _, line := range strings.Split(strings.TrimSpace(run(t, nil, true, "dpkg-deb", "-c", deb)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb -c: unexpected line %q", line)
		}
		listing[strings.TrimPrefix(f[len(f)-1], ".")] = [2]string{f[0], f[1]}
	}
	for path, want := range map[string][2]string{
		"/usr/bin/credgw":                    {"-rwxr-xr-x", "root/root"},
		"/lib/systemd/system/credgw.service": {"-rw-r--r--", "root/root"},
		// postinst gives it group credgw (dpkg-statoverride).
		"/etc/credgw/credgw.yaml":            {"-rw-r-----", "root/root"},
		"/etc/credgw/":                       {"drwxr-xr-x", "root/root"},
		"/usr/share/doc/credgw/copyright":    {"-rw-r--r--", "root/root"},
		"/usr/share/doc/credgw/changelog.gz": {"-rw-r--r--", "root/root"},
		// Man pages from the CLI (make man).
		"/usr/share/man/man1/credgw.1.gz":              {"-rw-r--r--", "root/root"},
		"/usr/share/man/man1/credgw-config-check.1.gz": {"-rw-r--r--", "root/root"},
	} {
		if got, ok := listing[path]; !ok {
			t.Errorf("package lacks %s", path)
		} else if got != want {
			t.Errorf("%s: %s %s, want %s %s", path, got[0], got[1], want[0], want[1])
		}
	}
	ctl := t.TempDir()
	run(t, nil, true, "dpkg-deb", "-e", deb, ctl)
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		run(t, nil, true, "sh", "-n", filepath.Join(ctl, s))
	}
	if b, err := os.ReadFile(filepath.Join(ctl, "postinst")); err != nil || !strings.Contains(string(b), "install -d -o credgw -g credgw -m 0700 /var/lib/credgw") {
		t.Errorf("postinst does not make /var/lib/credgw, where the first install's credgw migrate makes the database (%v)", err)
	}
	if b, err := os.ReadFile(filepath.Join(ctl, "postinst")); err != nil || !strings.Contains(string(b), "adduser --system --group") {
		t.Errorf("postinst does not create the system user credgw (%v)", err)
	}

	// Installed into a throwaway root: the binary runs.
	root := t.TempDir()
	run(t, nil, true, "dpkg-deb", "-x", deb, root)
	bin := filepath.Join(root, "usr/bin/credgw")
	// "credgw VERSION", the release the binary was built from.
	if v := run(t, nil, true, bin, "--version"); !strings.HasPrefix(v, "credgw ") {
		t.Errorf("%s --version: %q, want credgw VERSION", bin, v)
	}

	// The example config loads as /etc/credgw/credgw.yaml.
	confPath := filepath.Join(root, "etc/credgw/credgw.yaml")
	conf, err := os.ReadFile(confPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := server.ParseConfig(conf, "/etc/credgw")
	if err != nil {
		t.Fatalf("the example config: %v", err)
	}
	if cfg.Development {
		t.Error("the example config is a development one")
	}
	// Without a sender every enrollment is refused (escrowed keys).
	if cfg.Notify.SMTP.Address == "" && cfg.Notify.Webhook.URL == "" && cfg.Notify.File == "" {
		t.Error("the example config sends no notifications: serve would refuse every enrollment")
	}
	unitPath := filepath.Join(root, "lib/systemd/system/credgw.service")
	unitText, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	unit := map[string][]string{}
	// systemctl reload sends SIGHUP, which serve handles (TestSIGHUPReload).
	if !strings.Contains(string(unitText), "\nExecReload=/bin/kill -HUP $MAINPID\n") {
		t.Error("the unit has no ExecReload sending SIGHUP")
	}
	for _, line := range strings.Split(string(unitText), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			unit[k] = append(unit[k], v)
		}
	}
	for k, want := range map[string]string{
		"ExecStart":              "/usr/bin/credgw serve --config /etc/credgw/credgw.yaml",
		"User":                   "credgw",
		"StateDirectory":         "credgw",
		"ConfigurationDirectory": "credgw",
		"ProtectSystem":          "strict",
		"NoNewPrivileges":        "yes",
		"CapabilityBoundingSet":  "",
		"AmbientCapabilities":    "",
		"PrivateDevices":         "yes",
	} {
		if got := unit[k]; len(got) != 1 || got[0] != want {
			t.Errorf("unit: %s=%q, want %q", k, got, want)
		}
	}
	// Every credential the config reads is one the unit loads.
	creds := map[string]bool{}
	for _, v := range unit["LoadCredential"] {
		name, _, _ := strings.Cut(v, ":")
		creds[name] = true
	}
	used := regexp.MustCompile(`\$CREDENTIALS_DIRECTORY/([A-Za-z0-9_-]+)`).FindAllStringSubmatch(string(conf), -1)
	if len(used) == 0 {
		t.Error("the example config reads no credential: PINs and keys belong in LoadCredential=")
	}
	for _, m := range used {
		if !creds[m[1]] {
			t.Errorf("the config reads credential %q, which the unit does not load", m[1])
		}
	}

	// systemd-analyze verify checks that ExecStart's binary exists: verify a
	// copy whose ExecStart names the unpacked one.
	vdir := t.TempDir()
	vunit := strings.Replace(string(unitText), "ExecStart=/usr/bin/credgw", "ExecStart="+bin, 1)
	if err := os.WriteFile(filepath.Join(vdir, "credgw.service"), []byte(vunit), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := run(t, nil, true, "systemd-analyze", "verify", "--man=no", filepath.Join(vdir, "credgw.service")); strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify:\n%s", out)
	}

	sec := run(t, nil, true, "systemd-analyze", "security", "--offline=true", "--root="+root, "credgw.service")
	m := regexp.MustCompile(`Overall exposure level for credgw\.service: ([0-9.]+) (\S+)`).FindStringSubmatch(sec)
	if m == nil {
		t.Fatalf("systemd-analyze security: no overall exposure level:\n%s", sec)
	}
	if score, err := strconv.ParseFloat(m[1], 64); err != nil || score > 2.0 || m[2] != "OK" {
		t.Errorf("systemd-analyze security: exposure %s %s, want at most 2.0 OK:\n%s", m[1], m[2], sec)
	}
	t.Logf("systemd-analyze security: %s", m[0])

	// lintian: warnings are allowed, errors are not. It exits non-zero on
	// an error; the E: lines say which.
	lint := exec.Command("lintian", "--tag-display-limit", "0", deb)
	lintOut, _ := lint.CombinedOutput()
	for _, line := range strings.Split(string(lintOut), "\n") {
		if strings.HasPrefix(line, "E:") {
			t.Errorf("lintian: %s", line)
		}
	}
	if lint.ProcessState == nil || (lint.ProcessState.ExitCode() != 0 && !bytes.Contains(lintOut, []byte("E:"))) {
		t.Errorf("lintian did not run cleanly:\n%s", lintOut)
	}
	t.Logf("lintian:\n%s", lintOut)
}
