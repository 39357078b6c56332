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
