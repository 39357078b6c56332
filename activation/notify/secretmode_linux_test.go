package notify_test

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/credgw/credgw/activation/notify"
)

// TestSecretFileGroupRead: group read is taken only where the group is
// the gateway's own or the file carries an ACL (systemd's
// LoadCredential); a secret readable by any other group is refused.
func TestSecretFileGroupRead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file another group (make test runs as root)")
	}
	const field = "termination_webhook.secret_file"
	dir := t.TempDir()
	write := func(name string, gid int, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, 0, gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := notify.ReadKeyFile(write("ours.key", os.Getegid(), 0o640), field); err != nil {
		t.Errorf("0640, the gateway's group: %v", err)
	}
	if _, err := notify.ReadKeyFile(write("theirs.key", 65534, 0o640), field); err == nil || !strings.HasPrefix(err.Error(), field) {
		t.Errorf("0640, another group: %v, want a refusal", err)
	}
	// What systemd's LoadCredential makes for a service user: 0400 owned
	// by root, plus an ACL entry user:SERVICE:r-- (stat shows the mask,
	// r--, as the group bits: 0440), group not the gateway's.
	cred := write("credential.key", 65534, 0o400)
	acl := make([]byte, 4, 4+5*8)
	binary.LittleEndian.PutUint32(acl, 2) // POSIX_ACL_XATTR_VERSION
	for _, e := range []struct {
		tag, perm uint16
		id        uint32
	}{{0x01, 4, 0xffffffff}, {0x02, 4, 65534}, {0x04, 0, 0xffffffff}, {0x10, 4, 0xffffffff}, {0x20, 0, 0xffffffff}} {
		acl = binary.LittleEndian.AppendUint16(acl, e.tag)
		acl = binary.LittleEndian.AppendUint16(acl, e.perm)
		acl = binary.LittleEndian.AppendUint32(acl, e.id)
	}
	if err := syscall.Setxattr(cred, "system.posix_acl_access", acl, 0); errors.Is(err, syscall.ENOTSUP) || errors.Is(err, syscall.EOPNOTSUPP) {
		t.Skipf("no POSIX ACLs on %s", dir)
	} else if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(cred); err != nil || fi.Mode().Perm() != 0o440 {
		t.Fatalf("the credential's mode: %v %v, want 0440 (the ACL's mask)", fi.Mode().Perm(), err)
	}
	if _, err := notify.ReadKeyFile(cred, field); err != nil {
		t.Errorf("a systemd credential (ACL): %v", err)
	}
}

// TestSecretFileFolders: a secret is taken only from folders no other
// user may write: a key file in a folder anyone (or another group) may
// write, without the sticky bit that keeps others from replacing it,
// could be swapped for one of their making (a webhook key that then signs
// terminations).
func TestSecretFileFolders(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file another owner (make test runs as root)")
	}
	const field = "termination_webhook.secret_file"
	key := []byte(strings.Repeat("ab", 32))
	base := t.TempDir()
	mk := func(dir string, mode os.FileMode) string {
		p := filepath.Join(base, dir)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write := func(dir string, uid int) string {
		p := filepath.Join(dir, "hook.key")
		if err := os.WriteFile(p, key, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, os.Getegid()); err != nil {
			t.Fatal(err)
		}
		return p
	}
	chgrp := func(p string, gid int) string {
		if err := os.Chown(p, os.Geteuid(), gid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := mk("ok", 0o755)
	if _, err := notify.ReadKeyFile(write(mk("ourgroupw", 0o775), os.Geteuid()), field); err != nil {
		t.Errorf("our own file in a folder the gateway's own group may write: %v", err)
	}
	if _, err := notify.ReadKeyFile(write(ok, os.Geteuid()), field); err != nil {
		t.Errorf("our own file in a 0755 folder: %v", err)
	}
	sticky := mk("sticky", 0o777|os.ModeSticky)
	if _, err := notify.ReadKeyFile(write(sticky, os.Geteuid()), field); err != nil {
		t.Errorf("our own file in a sticky 1777 folder (as /tmp): %v", err)
	}
	for name, p := range map[string]string{
		"a folder anyone may write":        write(mk("open", 0o777), os.Geteuid()),
		"a folder another group may write": write(chgrp(mk("groupw", 0o775), 65534), os.Geteuid()),
	} {
		_, err := notify.ReadKeyFile(p, field)
		if err == nil || !strings.HasPrefix(err.Error(), field) {
			t.Errorf("%s: %v, want a refusal naming %s", name, err, field)
		}
	}
}

// TestSecretFileFoldersOfTheLink: a secret named through a symbolic link
// in a folder anyone may write is refused, though the file it points to
// is in a safe folder: anyone could point the link elsewhere.
func TestSecretFileFoldersOfTheLink(t *testing.T) {
	base := t.TempDir()
	safe := filepath.Join(base, "safe")
	open := filepath.Join(base, "open")
	for _, d := range []string{safe, open} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(safe, "hook.key")
	if err := os.WriteFile(key, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(open, "hook.key")
	if err := os.Symlink(key, link); err != nil {
		t.Fatal(err)
	}
	const field = "termination_webhook.secret_file"
	if _, err := notify.ReadKeyFile(key, field); err != nil {
		t.Fatalf("the file itself: %v", err)
	}
	if _, err := notify.ReadKeyFile(link, field); err == nil {
		t.Error("a link in a folder anyone may write was followed")
	}
	// Relative to a folder anyone may write: the same.
	wd, _ := os.Getwd()
	t.Cleanup(func() { os.Chdir(wd) })
	if err := os.Chdir(open); err != nil {
		t.Fatal(err)
	}
	if _, err := notify.ReadKeyFile("hook.key", field); err == nil {
		t.Error("a relative name in a folder anyone may write was taken")
	}
}

// TestSecretFileGatewayGroupForRoot: root runs the admin commands (ca
// init, ca import) on files root:credgw 0640, the packaged set-up: root's
// own group is not credgw, and the file was refused.
func TestSecretFileGatewayGroupForRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	restore := notify.SetGatewayGroupForTest("nogroup")
	defer restore()
	p := filepath.Join(t.TempDir(), "ca.pin")
	if err := os.WriteFile(p, []byte("123456\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 0, 65534); err != nil { // nogroup, standing for credgw
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := notify.ReadSecretFile(p, "ca.key_uri pin-source"); err != nil {
		t.Errorf("root reading a 0640 file of the gateway's group: %v", err)
	}
}
