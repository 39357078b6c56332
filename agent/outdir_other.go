//go:build !unix

package agent

// checkOutDir: file modes do not tell who can write a directory here (a
// Windows directory reports 0777; access is in its ACL): the device's
// platform keystore is the place for keys on such systems.
func checkOutDir(string) error { return nil }
