package admin

// SetImportBatch sets how many lines of a bulk import go to the store at
// once, until the returned func restores it.
func SetImportBatch(n int) (restore func()) {
	old := importBatch
	importBatch = n
	return func() { importBatch = old }
}
