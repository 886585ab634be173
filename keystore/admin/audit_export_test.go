package admin

// SetAnonAuditLimit sets how many unauthenticated requests a handler made
// from now on stores, until the test ends.
func SetAnonAuditLimit(t interface{ Cleanup(func()) }, rate, burst float64) {
	oldRate, oldBurst := anonAuditRate, anonAuditBurst
	anonAuditRate, anonAuditBurst = rate, burst
	t.Cleanup(func() { anonAuditRate, anonAuditBurst = oldRate, oldBurst })
}
