// Node-RED settings for bench/http-relay.sh (copied into the scratch folder and
// run with --settings; --userDir is the scratch folder). Headless: no editor,
// no admin API, no telemetry; only the flow in flows.json.
module.exports = {
    flowFile: "flows.json",
    credentialSecret: false,
    uiHost: "127.0.0.1",
    uiPort: parseInt(process.env.NODERED_PORT || "1880", 10),
    // false: no editor and no admin HTTP API; the `http in` nodes still serve.
    httpAdminRoot: false,
    httpNodeRoot: "/",
    // Body limit of the `http in` node's JSON and urlencoded parsers (default
    // 5mb, counted after gzip is inflated; a bigger body is answered 500, with
    // PayloadTooLargeError in the log). An application/octet-stream
    // body is read by its raw parser (raw-body) with no limit at all, but
    // whole, into one Buffer. Raised so that no content type meets a 413:
    // the bench is about what buffering costs, not about a limit.
    apiMaxLength: "2gb",
    // The `http request` node's timeout (default 120 s); raised so a slow
    // large exchange is measured rather than cut off.
    httpRequestTimeout: 3600000,
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    // "info" only for the start-up lines ("Started flows" is the ready signal).
    logging: { console: { level: "info", metrics: false, audit: false } },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    functionExternalModules: false,
    exportGlobalContextKeys: false,
    editorTheme: { projects: { enabled: false } },
};
