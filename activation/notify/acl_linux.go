package notify

import "syscall"

// hasACL reports whether the file carries a POSIX access ACL: its group
// mode bits are then the ACL's mask, not a group's permission.
func hasACL(path string) bool {
	n, err := syscall.Getxattr(path, "system.posix_acl_access", nil)
	return err == nil && n > 0
}
