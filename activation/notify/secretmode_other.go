//go:build !unix

package notify

import "os"

func groupIsOurs(os.FileInfo) bool { return false }

func foldersSafe(*os.File, string) error { return nil }
