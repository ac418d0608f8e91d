import JSONCore
import KazooEvents
import Testing

let decoder = EventDecoder()

func decode(_ text: String, _ format: WireFormat, hook: String? = nil) throws(EventDecodingError) -> WebhookEvent {
    try decoder.decode(Array(text.utf8), format: format, hook: hook)
}

func decodingError(
    _ bytes: [UInt8], _ format: WireFormat, decoder: EventDecoder = decoder,
    sourceLocation: SourceLocation = #_sourceLocation
) -> EventDecodingError? {
    do {
        let event = try decoder.decode(bytes, format: format)
        Issue.record("expected an error, decoded \(event.kind) \(event.name)", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

@Suite struct TypedFieldTests {
    @Test func formValuesAreCoercedToTheirTypes() throws {
        let event = try decodeSample("channel_destroy__strings_no_ccvs.form")
        #expect(event.kind == .channel && event.name == "channel_destroy")
        #expect(event.durationSeconds == 12)
        #expect(event.billingSeconds == 9)
        #expect(event.ringingSeconds == 3)
        #expect(event.isInternalLeg == false)
        #expect(event["call_forwarded"] == .bool(false))
        #expect(event["hangup_code"] == "sip:200")
        #expect(event.callerIDNumber == "+14155550123")
        #expect(event.calleeIDName == "Front Desk")
        #expect(event.gregorianTime == 63_882_919_420)
        #expect(event.unixTime == 1_715_700_220)
    }

    @Test func numericStringTimestampInJSONIsAnInteger() throws {
        let event = try decodeSample("channel_create__docs_string_timestamp.json")
        #expect(event["timestamp"] == .int(63_724_349_409))
        #expect(event.unixTime == Int64(1_557_130_209))
    }

    @Test func headerCaseCustomChannelVarsAndCustomDataAreKept() throws {
        let event = try decodeSample("channel_create__inbound.form")
        #expect(event.customChannelVars?["Resource-Type"] == "offnet-origination")
        #expect(event.customChannelVars?["Global-Resource"] == "true")
        let custom = try decodeSample("channel_destroy__custom_data.json")
        #expect(custom["crm_tenant"] == "acme-west")
        #expect(custom.clusterID == "e4d9c2b1a0f8e7d6c5b4a39281706f5e")
    }

    @Test func nestedTypedFieldsAreCoercedInForms() throws {
        let event = try decodeSample("notifications__missed_call.query")
        #expect(event["notify"]?["duration_seconds"] == .int(24))
        #expect(event["notify"]?["custom_channel_vars"]?["resource_type"] == "offnet-origination")
        #expect(event["to"] == ["frontdesk@acme.example.com"])
        #expect(event["call_bridged"] == .bool(false))
        let fax = try decodeSample("notifications__inbound_fax.form")
        #expect(fax["fax_info"]?["fax_success"] == .bool(true))
        #expect(fax["fax_info"]?["fax_total_pages"] == "2")
        #expect(fax["fax_notifications"]?["email"]?["send_to"] == ["fax@acme.example.com"])
    }

    @Test func objectsInsideFormListsAreJSONDecoded() throws {
        let event = try decodeSample("notifications__bill_reminder.form")
        #expect(event["items"]?.arrayValue?.count == 3)
        #expect(event["items"]?.arrayValue?[0]["rate"] == .double(9.99))
        #expect(event["items"]?.arrayValue?[1]["discounts"]?["cumulative"]?["quantity"] == .int(1))
    }

    @Test func floatsStayFloatsAcrossFormats() throws {
        let json = try decodeSample("notifications__topup.json")
        let form = try decodeSample("notifications__topup.form")
        #expect(json["amount"] == .double(50.0))
        #expect(form["amount"] == .double(50.0))
        #expect(form["success"] == .bool(true))
        #expect(try decodeSample("sms__inbound_offnet.form")["charges"] == .double(0.0075))
    }

    @Test func parkingSlotIsAStringEvenWhenTheDocsSayNumber() throws {
        let event = try decodeSample("parking__docs_numeric_slot.json")
        #expect(event["parking_slot"] == "101")
        #expect(event["caller_id_Number"] == "+14155550123")  // the docs' misspelt key is kept as it came
    }

    @Test func wrongTypesNameTheFieldPath() {
        let error = decodingError(Array(#"{"hook_event":"channel_destroy","duration_seconds":{"a":1}}"#.utf8), .json)
        #expect(error?.kind == .wrongType)
        #expect(error?.message == "duration_seconds: expected integer, got object")
        #expect(error?.path == "duration_seconds")
        let nested = decodingError(
            Array("event_category=notification&event_name=missed_call&notify[duration_seconds]=soon".utf8), .form)
        #expect(nested?.message == #"notify.duration_seconds: expected integer, got string "soon""#)
        let bool = decodingError(Array("hook_event=channel_create&is_internal_leg=maybe".utf8), .form)
        #expect(bool?.message == #"is_internal_leg: expected boolean, got string "maybe""#)
        let fraction = decodingError(Array(#"{"hook_event":"channel_destroy","billing_seconds":9.5}"#.utf8), .json)
        #expect(fraction?.message == "billing_seconds: expected integer, got number 9.5")
    }

    @Test func emptyFormValuesOfTypedFieldsAreAbsent() throws {
        let event = try decode(
            "hook_event=channel_destroy&duration_seconds=&billing_seconds=&ringing_seconds=7&call_id=x", .form)
        #expect(event["duration_seconds"] == nil)
        #expect(event["billing_seconds"] == nil)  // dropped right after another dropped field
        #expect(event["ringing_seconds"] == .int(7))
        #expect(event.callID == "x")
        #expect(event.fields.keys == ["hook_event", "ringing_seconds", "call_id"])
    }
}

@Suite struct IdentificationTests {
    @Test func callflowWebhookIsInferredWithoutAHint() throws {
        #expect(try decodeSample("webhook__callflow_missed_frontdesk.form").kind == .webhook)
        #expect(try decodeSample("webhook__callflow_missed_frontdesk.query").kind == .webhook)
    }

    @Test func hintFillsInWhereThePayloadSaysNothing() throws {
        let bare = #"{"call_id":"abc","account_id":"a1"}"#
        #expect(try decode(bare, .json).kind == .unknown)
        let answered = try decode(bare, .json, hook: "channel_answer")
        #expect(answered.kind == .channel && answered.name == "channel_answer")
        #expect(try decode(bare, .json, hook: "webhook").kind == .webhook)
        #expect(try decode(bare, .json, hook: "callflow").kind == .webhook)
        let sms = try decode(#"{"id":"m1","body":"hi"}"#, .json, hook: "sms")
        #expect(sms.kind == .sms)
        let notification = try decode(bare, .json, hook: "notifications")
        #expect(notification.kind == .unknown && notification.hook == "notifications")
    }

    @Test func thePayloadWinsOverAHint() throws {
        let event = try decodeSample("channel_create__inbound.json", hook: "all")
        #expect(event.name == "channel_create")
        let misrouted = try decodeSample("notifications__low_balance.json", hook: "channel_create")
        #expect(misrouted.kind == .notification && misrouted.name == "low_balance")
    }

    @Test func kazoo43LeaksAndDocNamesAreHandled() throws {
        let leaked = try decodeSample("notifications__low_balance_43_type_leak.json")
        #expect(leaked.kind == .notification && leaked.name == "low_balance")
        #expect(leaked["type"] == "low_balance")
        let topup = try decodeSample("notifications__topup_docs_name.json")
        #expect(topup.name == "topup")
        let all = try decodeSample("object__all_hook_43_leak.json")
        #expect(all.kind == .object && all.name == "all")
        #expect(all.qualifiedName == "object.all")
    }

    @Test func unknownEventsAreAcceptedWithTheirFields() throws {
        let hold = try decodeSample("unknown__future_channel_hold.json")
        #expect(hold.kind == .unknown && hold.name == "channel_hold")
        #expect(hold.callID != nil)
        #expect(hold["timestamp"]?.intValue != nil)
        let future = try decodeSample("unknown__future_notification.json")
        #expect(future.kind == .unknown && future.name == "balance_forecast" && future.hook == "notifications")
        #expect(future.qualifiedName == "notifications.balance_forecast")
        let nothing = try decode("a=1&b=2", .form)
        #expect(nothing.kind == .unknown && nothing.name == "unknown" && nothing["a"] == "1")
    }

    @Test func qualifiedNamesAreWhatRulesWillUse() throws {
        #expect(try decodeSample("notifications__voicemail_new.json").qualifiedName == "notifications.voicemail_new")
        #expect(try decodeSample("object__doc_edited_device.json").qualifiedName == "object.doc_edited")
        #expect(try decodeSample("parking__park_parked.json").qualifiedName == "parking.PARK_PARKED")
        #expect(try decodeSample("channel_destroy__inbound.json").qualifiedName == "channel_destroy")
    }

    @Test func thereAre39NotificationTypes() {
        #expect(EventCatalog.all.filter { $0.kind == .notification }.count == 39)
    }

    /// The catalog's index finds every spec by kind and name, tells apart a name two kinds share, and finds a
    /// field's type with the key Strings the JSON reader shares and with any other String alike.
    @Test func everySpecIsFoundByKindAndName() throws {
        let names = Dictionary(grouping: EventCatalog.all, by: \.name)
        #expect(names.values.contains { $0.count > 1 }, "some name belongs to two kinds")
        for spec in EventCatalog.all {
            let found = try #require(EventCatalog.spec(kind: spec.kind, name: spec.name))
            #expect(found.kind == spec.kind && found.name == spec.name && found.fields == spec.fields)
            for field in spec.fields {
                #expect(found.type(of: field.name) == field.type)
                #expect(found.type(of: String(decoding: Array(field.name.utf8), as: UTF8.self)) == field.type)
            }
        }
        #expect(EventCatalog.spec(kind: .parking, name: "channel_create") == nil)
        #expect(EventCatalog.spec(kind: .channel, name: "no_such_event") == nil)
    }
}

@Suite struct FormatTests {
    @Test func strayQuestionMarkInGetHooks() throws {
        let event = try decodeSample("parking__stray_question_mark.query")
        #expect(event.name == "PARK_ABANDONED")
        #expect(event["token"] == "abc123")
        #expect(event["callee_id_number"] == "*3101")
        #expect(event["account_id"] == "3a1f7c9e2b8d4f60a5c1e7d9b2f4a6c8")
    }

    @Test func queryAcceptsABareQueryALeadingMarkOrAURL() throws {
        let bare = try decode("hook_event=channel_create&call_id=a", .query)
        #expect(try decode("?hook_event=channel_create&call_id=a", .query) == bare)
        #expect(try decode("http://h.example/hooks?x=1?hook_event=channel_create&call_id=a", .query).callID == "a")
    }

    @Test func formDetails() throws {
        let event = try decode("hook_event=channel_create&&caller_id_name=A+B%2BC&k[]=1&k[]=2&a[b][c]=d&&", .form)
        #expect(event.callerIDName == "A B+C")
        #expect(event["k"] == ["1", "2"])
        #expect(event["a"]?["b"]?["c"] == "d")
        #expect(event.fields.keys == ["hook_event", "caller_id_name", "k", "a"])
        // Percent-encoded brackets in keys nest too; unbalanced brackets are literal.
        let other = try decode("x%5By%5D=1&z[=2", .form)
        #expect(other["x"]?["y"] == "1")
        #expect(other["z["] == "2")
        // Keys split on their bytes: parts in any script, a bracket followed by a combining mark still a bracket; a
        // key that starts with one, or has text after its last `]`, literal.
        let split = try decode("caf%C3%A9[n%C3%BA][]=1&a[%CC%81b]=2&[c]=3&d[e]f=4&g[h][=5", .form)
        #expect(split["café"]?["nú"] == ["1"])
        #expect(split["a"]?["\u{301}b"] == "2")
        #expect(split["[c]"] == "3")
        #expect(split["d[e]f"] == "4")
        #expect(split["g[h]["] == "5")
        // A key given again keeps its first place and takes its last value, in an object of a few keys and in one
        // past the 32 that are searched in order before they are indexed.
        let many = (0..<40).map { "k\($0)=\($0)" } + ["k3=x", "k39=y", "k40=z", "k3=w", "k40=v"]
        let wide = try decode("hook_event=channel_create&" + many.joined(separator: "&"), .form)
        #expect(wide.fields.keys == ["hook_event"] + (0...40).map { "k\($0)" })
        #expect(wide["k3"] == "w" && wide["k39"] == "y" && wide["k40"] == "v" && wide["k38"] == "38")
        let few = try decode("hook_event=channel_create&a=1&b=2&a=3", .form)
        #expect(few.fields.keys == ["hook_event", "a", "b"] && few["a"] == "3")
        // Bytes that are not UTF-8 are refused, the error naming the key or the value.
        #expect(
            decodingError(Array("a=1&caller_id_name=%FF".utf8), .form)?.message
                == "the value of caller_id_name is not valid UTF-8")
        #expect(decodingError(Array("a%FF=1".utf8), .form)?.message == "a form key is not valid UTF-8")
        // %00 decodes to a NUL character inside the value.
        #expect(try decode("a=x%00y", .form)["a"] == "x\u{0}y")
    }

    @Test func formatDetection() {
        #expect(WireFormat.detect(contentType: "application/json; charset=utf-8", body: Array("a=1".utf8)) == .json)
        #expect(WireFormat.detect(contentType: "application/x-www-form-urlencoded", body: Array("{".utf8)) == .form)
        #expect(WireFormat.detect(contentType: nil, body: Array("  {\"a\":1}".utf8)) == .json)
        #expect(WireFormat.detect(contentType: nil, body: Array("a=1&b=2".utf8)) == .form)
        #expect(WireFormat.detect(contentType: nil, body: Array("/hooks/x?a=1".utf8)) == .query)
        // Media types are case-insensitive (RFC 9110); an unknown one leaves the choice to the bytes.
        #expect(WireFormat.detect(contentType: "Application/JSON", body: Array("a=1".utf8)) == .json)
        let form = "APPLICATION/X-WWW-FORM-URLENCODED; charset=UTF-8"
        #expect(WireFormat.detect(contentType: form, body: Array("{".utf8)) == .form)
        #expect(WireFormat.detect(contentType: "text/plain", body: Array("a=1".utf8)) == .form)
        #expect(WireFormat.detect(contentType: "jso", body: Array("{}".utf8)) == .json)
        #expect(WireFormat.detect(contentType: "", body: Array("a=1".utf8)) == .form)
    }
}

@Suite struct BadInputTests {
    @Test func emptyBodies() {
        #expect(decodingError([], .json)?.kind == .emptyBody)
        #expect(decodingError(Array("  \n".utf8), .json)?.kind == .emptyBody)
        #expect(decodingError([], .form)?.kind == .emptyBody)
        #expect(decodingError(Array("&&".utf8), .form)?.kind == .emptyBody)
        #expect(decodingError(Array("/hooks/x".utf8), .query)?.kind == .emptyBody)
    }

    @Test func topLevelMustBeAnObject() {
        #expect(
            decodingError(Array("[1,2]".utf8), .json)?.message
                == "expected a JSON object at the top level, got an array")
        #expect(decodingError(Array("42".utf8), .json)?.kind == .notAnObject)
        #expect(decodingError(Array("\"x\"".utf8), .json)?.kind == .notAnObject)
        #expect(decodingError(Array("null".utf8), .json)?.kind == .notAnObject)
    }

    @Test func jsonSyntaxErrorsSayWhere() {
        let error = decodingError(Array(#"{"call_id": "x",}"#.utf8), .json)
        #expect(error?.kind == .syntax)
        #expect(error?.offset == 16)
        #expect(error?.description.contains("at byte 16") == true)
    }

    @Test func byteOrderMarkIsAccepted() throws {
        let event = try decoder.decode(
            [0xEF, 0xBB, 0xBF] + Array(#"{"hook_event":"channel_create"}"#.utf8), format: .json)
        #expect(event.name == "channel_create")
    }

    @Test func invalidUTF8() {
        #expect(decodingError(Array(#"{"a":""#.utf8) + [0xFF] + Array(#""}"#.utf8), .json)?.kind == .invalidUTF8)
        #expect(decodingError(Array("a=%FF%FE".utf8), .form)?.kind == .invalidUTF8)
        #expect(decodingError(Array("a=%zz".utf8), .form)?.kind == .syntax)
        #expect(decodingError(Array("a=%4".utf8), .form)?.kind == .syntax)
    }

    @Test func nanInfinityAndOutOfRangeNumbers() {
        #expect(decodingError(Array(#"{"a":NaN}"#.utf8), .json)?.kind == .syntax)
        #expect(decodingError(Array(#"{"a":-Infinity}"#.utf8), .json)?.kind == .syntax)
        #expect(decodingError(Array(#"{"a":1e400}"#.utf8), .json)?.kind == .syntax)
        #expect(
            decodingError(Array("event_category=notification&event_name=low_balance&current_balance=NaN".utf8), .form)?
                .kind == .wrongType)
        #expect(
            decodingError(Array("hook_event=channel_destroy&duration_seconds=99999999999999999999".utf8), .form)?.kind
                == .wrongType)
    }

    @Test func duplicateKeysKeepTheLastValue() throws {
        #expect(try decode(#"{"call_id":"a","call_id":"b"}"#, .json).callID == "b")
        #expect(try decode("call_id=a&call_id=b", .form).callID == "b")
    }

    @Test func nulBytes() throws {
        #expect(decodingError(Array(#"{"a":""#.utf8) + [0] + Array(#""}"#.utf8), .json)?.kind == .syntax)
        #expect(try decode(#"{"a":"x\u0000y"}"#, .json)["a"] == "x\u{0}y")
    }

    @Test func limitsEachSayWhichLimit() {
        let small = EventDecoder(
            limits: DecodingLimits(maxBodyBytes: 64, json: JSONLimits(maxDepth: 3, maxKeys: 5, maxStringBytes: 8)))
        let big = decodingError(Array(repeating: UInt8(ascii: " "), count: 65), .json, decoder: small)
        #expect(big?.kind == .limit)
        #expect(big?.message.contains("over the limit of 64") == true)
        #expect(
            decodingError(Array(#"{"a":{"b":{"c":{}}}}"#.utf8), .json, decoder: small)?.message.contains(
                "deeper than 3") == true)
        #expect(
            decodingError(Array("a[b][c][d]=1".utf8), .form, decoder: small)?.message.contains("deeper than 3") == true)
        #expect(
            decodingError(Array("a=1&b=2&c=3&d=4&e=5&f=6".utf8), .form, decoder: small)?.message.contains(
                "too many form fields") == true)
        #expect(
            decodingError(Array(#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6}"#.utf8), .json, decoder: small)?.message
                .contains("too many keys") == true)
        #expect(
            decodingError(Array(#"{"a":"123456789"}"#.utf8), .json, decoder: small)?.message.contains("longer than 8")
                == true)
        #expect(
            decodingError(Array("a=123456789".utf8), .form, decoder: small)?.message.contains("longer than 8") == true)
    }

    @Test func largeFormBodiesDecodeInLinearTime() throws {
        let pairs = (0..<9_999).map { "k\($0)[x]=\($0)" }.joined(separator: "&")
        let event = try decode(pairs, .form)
        #expect(event.fields.count == 9_999)
        #expect(event["k9998"]?["x"] == "9998")
    }
}

@Suite struct TimeTests {
    @Test func gregorianAndUnixConvert() {
        #expect(WebhookEvent.unixTime(fromGregorian: 63_883_315_387) == 1_716_096_187)
        #expect(WebhookEvent.gregorian(fromUnix: 0) == 62_167_219_200)
    }

    @Test func eventTimeComesFromTheTimestampFieldsInOrder() throws {
        let vm = try decodeSample("notifications__voicemail_new.json")
        #expect(vm.gregorianTime == vm["voicemail_timestamp"]?.intValue)
        let reg = try decodeSample("notifications__register.form")
        #expect(reg.gregorianTime == reg["event_timestamp"]?.intValue)
    }
}
