//! What to tell the administrator when a mail step fails (PROVIDERS.md, "Errors and what to
//! tell the administrator"). Stable codes, like the OAuth catalogue's.

macro_rules! mail_remedies {
    ($($variant:ident = $code:literal, $text:literal;)+) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MailRemedy { $($variant),+ }
        impl MailRemedy {
            pub const ALL: &'static [MailRemedy] = &[$(MailRemedy::$variant),+];
            pub fn code(self) -> &'static str { match self { $(MailRemedy::$variant => $code),+ } }
            pub fn sentence(self) -> &'static str { match self { $(MailRemedy::$variant => $text),+ } }
        }
    };
}

mail_remedies! {
    DnsFailed = "dns_failed", "The server name does not resolve. Check the host name (and this server's DNS).";
    ConnectionRefused = "connection_refused", "Nothing accepts connections on that port. Check the host and port (IMAP 993/143, POP3 995/110, SMTP 587/465) and any firewall.";
    ConnectTimeout = "connect_timeout", "The connection attempt timed out. A firewall may drop the traffic; check host, port and outbound rules.";
    TlsNameMismatch = "tls_name_mismatch", "The server's certificate is not valid for this host name. Use the name on the certificate (e.g. outlook.office365.com), not an alias or IP address.";
    TlsUntrusted = "tls_untrusted", "The server's certificate is not trusted. Fix the server's certificate chain, or give mailgate the CA with MAILGATE_EXTRA_CA_FILE.";
    TlsExpired = "tls_expired", "The server's certificate has expired or is not yet valid.";
    NotTls = "not_tls", "The port does not speak TLS. Use TLS mode starttls for this port, or the implicit-TLS port (993/995/465).";
    TlsFailed = "tls_failed", "The TLS handshake failed. Check the TLS mode and port.";
    WrongProtocol = "wrong_protocol", "The server on this port speaks another protocol. Check the port: IMAP 993/143, POP3 995/110, SMTP 587/465.";
    NoStartTls = "starttls_not_offered", "The server does not offer STARTTLS on this port. Use implicit TLS (993/995/465) instead.";
    OAuthNotOffered = "xoauth2_not_offered", "The server does not offer XOAUTH2 or OAUTHBEARER, so it cannot accept OAuth tokens. Check the host (OAuth needs e.g. outlook.office365.com or imap.gmail.com) and that modern authentication is enabled for the protocol.";
    TokenUnavailable = "token_unavailable", "mailgate has no usable token for this account. Authorize it (again).";
    TokenWrongAudience = "token_wrong_audience", "The token is for another service (e.g. Microsoft Graph), not for Outlook mail. Use the Outlook scopes (https://outlook.office.com/IMAP.AccessAsUser.All, POP.AccessAsUser.All, SMTP.Send) and authorize again.";
    TokenMissingScope = "token_missing_scope", "The token lacks the permission for this protocol. Add the delegated permission (IMAP.AccessAsUser.All, POP.AccessAsUser.All or SMTP.Send) to the app and to its scopes, then authorize again.";
    AuthFailed = "auth_failed", "The server refused the token: wrong audience or scopes, the protocol is disabled for the mailbox, or the app lacks the delegated permission. Check IMAP/POP/SMTP AUTH is enabled for the mailbox.";
    SmtpAuthDisabled = "smtp_auth_disabled", "SMTP AUTH is disabled for the tenant or mailbox. Enable Authenticated SMTP for the mailbox in the Exchange admin center.";
    NotConnected = "authenticated_not_connected", "The token belongs to another user, or that user cannot open this mailbox. Authorize as the mailbox's own user; for a shared mailbox grant FullAccess and set it as the shared mailbox.";
    MailboxUnavailable = "mailbox_unavailable", "The server accepted the login but could not open the mailbox.";
    SendRejected = "send_rejected", "The server refused the message. Its words are below; common causes are sending as an address the account may not send as (grant Send As) or a blocked recipient.";
    MessageNotFound = "message_not_found", "The test message was sent but did not arrive in the inbox in time. Check spam/junk filtering, transport rules and forwarding on the mailbox.";
    ServerError = "server_error", "The server answered with an error. Its words are below.";
    Deadline = "deadline", "The server stopped answering (no reply within the time limit). Check the port, and whether a firewall or proxy holds the connection.";
    ConnectionLost = "connection_lost", "The server closed the connection unexpectedly.";
    Disabled = "account_disabled", "The account is disabled. Enable it to test it.";
    ServerBusy = "server_busy", "The server is temporarily not taking connections or commands (a 4xx reply such as 421). mailgate tries again later; if it lasts, check the server's load and limits.";
    AuthTemporary = "auth_temporary", "The mail server could not check the token just now (a temporary failure, such as 454 4.7.0, NO [UNAVAILABLE] or -ERR [SYS/TEMP]), often because it cannot reach the identity provider. The token was not refused: mailgate tries again later.";
    SharedMailboxNoAccess = "shared_mailbox_no_access", "The delegate signed in, but the server would not open the shared mailbox with its token: the delegate lacks FullAccess. Grant it in Exchange Online PowerShell: Add-MailboxPermission -Identity <mailbox> -User <delegate> -AccessRights FullAccess (it can take up to an hour to apply), then test again.";
    SendAsDenied = "send_as_denied", "The server refused to send as this address: the signed-in user may not send as it (Exchange: 5.7.60 SendAsDenied). Grant it in Exchange Online PowerShell: Add-RecipientPermission -Identity <mailbox> -Trustee <delegate> -AccessRights SendAs; or grant Send on Behalf (Set-Mailbox <mailbox> -GrantSendOnBehalfTo <delegate>) and switch the account to send on behalf.";
    AppMailboxNotGranted = "app_mailbox_not_granted", "The app signs in on its own (client credentials), and the server would not open this mailbox with the app's token: the app was not granted access to it. In Exchange Online PowerShell register the app's service principal (New-ServicePrincipal -AppId <client id> -ObjectId <enterprise application object id>) and grant it the mailbox: Add-MailboxPermission -Identity <mailbox> -User <service principal id> -AccessRights FullAccess.";
    SendDeferred = "send_deferred", "The server deferred the message with a temporary (4xx) reply: it is busy, rate-limiting, or cannot reach the next hop. Its words are below; mailgate tries again later.";
}
