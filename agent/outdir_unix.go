//go:build unix

package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// checkOutDir refuses an output directory that another user could change
// under the install: the directory itself writable by others or theirs
// (they could swap the staging directory for a link to one of theirs
// between the checks and the moves, and read the device's key files), a
// directory above it writable by others without the sticky bit (they
// could rename it away and put theirs in its place), or a symbolic link on
// the way that is theirs (they could point it elsewhere). root's are
// trusted, as everything is root's to change anyway.
func checkOutDir(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	// The links on the way, as the path is given.
	cur := string(filepath.Separator)
	for _, elem := range strings.Split(strings.TrimPrefix(abs, cur), string(filepath.Separator)) {
		if elem == "" {
			continue
		}
		next := filepath.Join(cur, elem)
		fi, err := os.Lstat(next)
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			if uid, ok := owner(fi); ok && uid != os.Geteuid() && uid != 0 {
				return fmt.Errorf("agent: %s, on the way to %s, is a link of another user's (uid %d): they could point it elsewhere; "+
					"give the output directory by a path of your own", next, dir, uid)
			}
			if next, err = filepath.EvalSymlinks(next); err != nil {
				return err
			}
		}
		cur = next
	}
	// The directory itself, then every directory above it.
	fi, err := os.Stat(cur)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("agent: %s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("agent: %s is writable by other users (mode %#o): they could swap the files the device's keys go into; "+
			"use a directory only you can write (chmod go-w %s)", dir, perm, dir)
	}
	if uid, ok := owner(fi); ok && uid != os.Geteuid() {
		return fmt.Errorf("agent: %s belongs to another user (uid %d): use a directory of your own for the device's keys", dir, uid)
	}
	for p := filepath.Dir(cur); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if uid, ok := owner(fi); ok && uid != os.Geteuid() && uid != 0 {
			return fmt.Errorf("agent: %s, above %s, belongs to another user (uid %d): they could replace the output directory; "+
				"use a directory under your own", p, dir, uid)
		}
		if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
			return fmt.Errorf("agent: %s, above %s, is writable by other users (mode %#o) without the sticky bit: they could "+
				"replace the output directory; use a directory under one only you can write", p, dir, fi.Mode().Perm())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

func owner(fi os.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}
