//go:build !linux

package notify

func hasACL(string) bool { return false }
