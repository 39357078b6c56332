//go:build unix

package notify

import (
	"os"
	"syscall"
)

// groupIsOurs reports whether the file's group is the gateway's own
// (its effective group).
func groupIsOurs(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Gid) == os.Getegid()
}
