// Millstream's patched copy of github.com/mochi-mqtt/server/v2 v2.7.9 (MIT,
// LICENSE.md): only the packages Millstream uses, with the fixes listed in
// PATCHES.md. go.mod replaces the upstream module with this directory.
module github.com/mochi-mqtt/server/v2

go 1.21

require (
	github.com/gorilla/websocket v1.5.3
	github.com/rs/xid v1.4.0
)
