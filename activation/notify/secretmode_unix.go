//go:build unix

package notify

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
)

// groupIsOurs reports whether the file's group is the gateway's own: its
// effective group, or, for root (the admin commands: ca init, ca import),
// the gateway's group by name, as the packaged set-up has it (root:credgw
// 0640).
func groupIsOurs(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	if int(st.Gid) == os.Getegid() {
		return true
	}
	if os.Geteuid() != 0 {
		return false
	}
	g, err := user.LookupGroup(gatewayGroup)
	return err == nil && g.Gid == strconv.Itoa(int(st.Gid))
}

// foldersSafe checks the folders from the secret's up to the root, both
// those of the name given (made absolute: the folders holding any link)
// and those of the file opened (f, links resolved): none may be written by
// any user (others) or by a group the gateway is not in, unless its sticky
// bit keeps them to their own files, or they could put a file of their
// own in the secret's place. (Who owns a folder is not checked: the
// operator who owns the configuration's is trusted with it.)
func foldersSafe(f *os.File, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	starts := []string{filepath.Dir(abs)}
	if real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd())); err == nil && filepath.IsAbs(real) {
		starts = append(starts, filepath.Dir(real))
	} else if real, err := filepath.EvalSymlinks(abs); err == nil {
		starts = append(starts, filepath.Dir(real))
	} else {
		return err
	}
	for _, d := range starts {
		if err := folderChainSafe(d); err != nil {
			return err
		}
	}
	return nil
}

// folderChainSafe checks folder d and every folder above it.
func folderChainSafe(d string) error {
	for ; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		perm := fi.Mode().Perm()
		sticky := fi.Mode()&os.ModeSticky != 0
		switch {
		case !ok:
		case !sticky && perm&0o002 != 0:
			return fmt.Errorf("anyone may write folder %s", d)
		case !sticky && perm&0o020 != 0 && !inGroup(int(st.Gid)):
			return fmt.Errorf("group %d may write folder %s", st.Gid, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// inGroup reports whether the gateway is in group gid.
func inGroup(gid int) bool {
	if gid == os.Getegid() {
		return true
	}
	groups, _ := os.Getgroups()
	return slices.Contains(groups, gid)
}
