//go:build unix

package notify

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// groupIsOurs reports whether the file's group is the gateway's own
// (its effective group).
func groupIsOurs(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Gid) == os.Getegid()
}

// foldersSafe checks the folders from path's (symbolic links resolved) up
// to the root: none may be written by any user (others) or by a group the
// gateway is not in, unless its sticky bit keeps them to their own files,
// or they could put a file of their own in the secret's place. (Who owns a
// folder is not checked: the operator who owns the configuration's is
// trusted with it.)
func foldersSafe(path string) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	for d := filepath.Dir(real); ; d = filepath.Dir(d) {
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
